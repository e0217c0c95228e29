defmodule Micelio.Storage.ReadmeFactsTest do
  # Facts the README repeats are checked against their one owner: the
  # settings table against `Micelio.Storage.Settings`, the error table
  # against the `reason` type.
  use ExUnit.Case, async: true

  @readme File.read!(Path.expand("../../../README.md", __DIR__))

  test "the README's settings table is the one Settings generates" do
    assert @readme =~ String.trim(Micelio.Storage.Settings.markdown()),
           "regenerate the README's table from Micelio.Storage.Settings.markdown/0"
  end

  test "every kind of error reason in the type has a row in the README's error table" do
    {:ok, types} = Code.Typespec.fetch_types(Micelio.Storage)

    {_, {:type, _, :union, members}, _} =
      Enum.find_value(types, fn
        {:type, {:reason, _, _} = t} -> t
        _ -> nil
      end)

    kinds =
      for member <- members do
        case member do
          {:atom, _, atom} -> atom
          {:type, _, :tuple, [{:atom, _, tag} | _]} -> tag
        end
      end

    rows = for line <- String.split(@readme, "\n"), String.starts_with?(line, "| `"), do: line

    for kind <- Enum.uniq(kinds) do
      assert Enum.any?(rows, &(&1 =~ "`:#{kind}" or &1 =~ "`{:#{kind}")),
             "the README's error table has no row for #{inspect(kind)}"
    end
  end

  test "every setting the engine reads is in the settings table (one owner per name)" do
    table = Enum.map(Micelio.Storage.Settings.names(), &Atom.to_string/1)
    engine = Micelio.Storage.Native.engine_setting_names()
    assert engine != []
    assert engine -- table == []
  end

  describe "the README's capability table" do
    @columns [
      :presigned_urls,
      :public_urls,
      :incomplete_uploads,
      :server_side_copy,
      :read_cache,
      :object_tags
    ]

    defp readme_row(backend) do
      line =
        @readme
        |> String.split("\n")
        |> Enum.find(&String.starts_with?(&1, "| `:#{backend}` |"))

      assert line, "no capability row for :#{backend}"
      [_, _ | cells] = String.split(line, "|", trim: false)
      cells |> Enum.take(length(@columns)) |> Enum.map(&String.trim/1)
    end

    defp yes_no(map), do: Enum.map(@columns, &if(Map.fetch!(map, &1), do: "yes", else: "no"))

    @tag :tmp_dir
    test "matches what local and memory declare", %{tmp_dir: dir} do
      assert {:ok, local} = Micelio.Storage.capabilities(backend: :local, local_path: dir)
      assert yes_no(local) == readme_row(:local)
      assert {:ok, memory} = Micelio.Storage.capabilities(backend: :memory)
      assert yes_no(memory) == readme_row(:memory)
    end

    test "matches what s3 declares (no request is sent to know it)" do
      opts = [
        backend: :s3,
        s3_bucket: "capabilities",
        s3_endpoint: "http://127.0.0.1:9",
        s3_access_key_id: "id",
        s3_secret_access_key: "secret"
      ]

      assert {:ok, s3} = Micelio.Storage.capabilities(opts)
      assert yes_no(s3) == readme_row(:s3)
    end

    @tag :tmp_dir
    test "tiered has the origin's, a read cache, and public URLs with a CDN", %{tmp_dir: dir} do
      assert {:ok, local} = Micelio.Storage.capabilities(backend: :local, local_path: dir)

      tiered = [backend: :tiered, origin_backend: :local, local_path: dir]

      assert {:ok, over_local} =
               Micelio.Storage.capabilities(tiered ++ [cache_disk_path: Path.join(dir, "c1")])

      assert over_local == %{local | read_cache: true}

      assert {:ok, with_cdn} =
               Micelio.Storage.capabilities(
                 tiered ++
                   [
                     cache_disk_path: Path.join(dir, "c2"),
                     cdn_base_url: "https://cdn.example.com"
                   ]
               )

      assert with_cdn.public_urls
    end
  end
end
