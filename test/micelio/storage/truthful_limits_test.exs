defmodule Micelio.Storage.TruthfulLimitsTest do
  # Limits met as a Phoenix app meets them: a VM out of file descriptors, a
  # consumer slower than the timeout, long file names, a file's mode, an
  # upload a killed VM left behind, and the XML parser's version.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{Seaweed, Tmp}

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  defp backends do
    dir = Tmp.dir!("limits")

    [
      memory: [backend: :memory, memory_name: "limits-#{System.unique_integer([:positive])}"],
      local: [local_path: Path.join(dir, "local")],
      s3: Seaweed.opts(),
      tiered: [
        backend: :tiered,
        origin_backend: :local,
        local_path: Path.join(dir, "origin"),
        cache_disk_path: Path.join(dir, "cache")
      ]
    ]
  end

  describe "out of file descriptors" do
    @tag timeout: 120_000
    test "a VM under ulimit -n gets {:io, :emfile} or a network error naming it, then recovers" do
      ebin = :code.lib_dir(:micelio_storage, :ebin)
      root = Tmp.dir!("emfile")
      File.write!(Path.join(root, "seed"), "x")

      script = """
      Application.ensure_all_started(:micelio_storage)
      root = #{inspect(root)}
      local = [local_path: Path.join(root, "store")]
      {:ok, _} = Micelio.Storage.put("k", "local bytes", local)
      # Code is loaded from files: load now what the rest needs.
      for app <- [:micelio_storage, :elixir, :logger, :crypto, :stdlib, :kernel],
          m <- Application.spec(app, :modules),
          do: Code.ensure_loaded(m)
      _ = :crypto.hash(:sha256, "warm")
      _ = inspect({:ok, %{a: DateTime.utc_now(), b: [1, "x"]}, {:error, {:io, :emfile}}})
      _ = "\#{1}\#{:a}\#{"b"}"
      s3 = #{inspect(Seaweed.opts(s3_pool_size: 0))}
      # Hold every descriptor the process may open.
      held =
        Stream.repeatedly(fn -> :file.open(Path.join(root, "seed"), [:read, :raw]) end)
        |> Enum.take_while(&match?({:ok, _}, &1))
        |> Enum.map(fn {:ok, f} -> f end)
      IO.puts("held \#{length(held)}")
      show = fn label, result -> IO.puts("\#{label}: \#{inspect(result)}") end
      show.("s3 put", Micelio.Storage.put("k", "v", s3))
      show.("local get_file", Micelio.Storage.get_file("k", Path.join(root, "out"), local))
      Enum.each(held, &:file.close/1)
      show.("s3 put after", Micelio.Storage.put("k", "v", s3))
      show.("local get_file after", Micelio.Storage.get_file("k", Path.join(root, "out"), local))
      """

      cmd = "ulimit -n 200; exec elixir -pa #{ebin} -e \"$SCRIPT\""

      {out, status} =
        System.cmd("bash", ["-c", cmd], env: [{"SCRIPT", script}], stderr_to_stdout: true)

      assert status == 0, out
      assert out =~ ~r/held \d+/
      [s3] = Regex.run(~r/^s3 put: (.*)$/m, out, capture: :all_but_first)
      [local] = Regex.run(~r/^local get_file: (.*)$/m, out, capture: :all_but_first)

      for result <- [s3, local] do
        refute result =~ "invalid_config", out
        refute result =~ "panic", out

        assert result =~
                 ~r/\{:error, \{:io, :emfile\}\}|\{:error, \{:network, .*(Too many open files|os error 24)/,
               out
      end

      assert out =~ ~r/^s3 put after: \{:ok, "k"\}$/m
      assert out =~ ~r/^local get_file after: \{:ok, %\{/m
    end
  end

  describe "stream/2 and a slow consumer" do
    test "pauses longer than :timeout between chunks do not time out, on every backend" do
      content = :crypto.strong_rand_bytes(3 * 1_048_576 + 17)

      for {name, o} <- backends() do
        {:ok, _} = Storage.put("slow/#{name}", content, o)

        chunks =
          Storage.stream("slow/#{name}", o ++ [timeout: 400])
          |> Enum.map(fn chunk ->
            Process.sleep(700)
            chunk
          end)

        assert IO.iodata_to_binary(chunks) == content, "#{name}"
        # Chunks are at most 1 MiB, as the docs say.
        assert Enum.all?(chunks, &(byte_size(&1) <= 1_048_576)), "#{name}"
      end
    end
  end

  describe "get_file/3 destinations" do
    test "a 250-byte file name works on every backend" do
      for {name, o} <- backends() do
        {:ok, _} = Storage.put("long/#{name}", "long name", o)
        dest = Path.join(Tmp.dir!("long-#{name}"), String.duplicate("n", 250))
        assert {:ok, _} = Storage.get_file("long/#{name}", dest, o), "#{name}"
        assert File.read!(dest) == "long name"
        assert File.ls!(Path.dirname(dest)) == [Path.basename(dest)]
      end
    end

    test "an existing destination keeps its mode on every backend" do
      for {name, o} <- backends() do
        {:ok, _} = Storage.put("mode/#{name}", "private", o)
        dest = Path.join(Tmp.dir!("mode-#{name}"), "secret.txt")
        File.write!(dest, "old")
        File.chmod!(dest, 0o600)
        assert {:ok, _} = Storage.get_file("mode/#{name}", dest, o)
        assert File.read!(dest) == "private"
        assert Bitwise.band(File.stat!(dest).mode, 0o777) == 0o600, "#{name}"
      end
    end
  end

  describe "abort_incomplete_uploads/2" do
    defmodule Artifacts do
      use Micelio.Storage, otp_app: :micelio_storage_limits_test
    end

    defp start_upload(o, key) do
      path = "/#{Seaweed.bucket()}/#{o[:s3_prefix]}#{key}?uploads"
      {:ok, {{_, 200, _}, _, body}} = Seaweed.signed_request(:post, path, "")
      assert body =~ "UploadId"
    end

    test "aborts the uploads older than :older_than under the prefix" do
      o = Seaweed.opts()
      start_upload(o, "left/one")
      start_upload(o, "left/two")
      start_upload(o, "other/three")
      {:ok, uploads} = Micelio.Storage.S3.incomplete_uploads(o)
      assert length(uploads) == 3

      # Started just now: younger than the default day.
      assert Micelio.Storage.S3.abort_incomplete_uploads("left/", o) == {:ok, 0}
      Process.sleep(1_100)

      assert Micelio.Storage.S3.abort_incomplete_uploads("left/", o ++ [older_than: 0]) ==
               {:ok, 2}

      {:ok, left} = Micelio.Storage.S3.incomplete_uploads(o)
      assert Enum.map(left, & &1.key) == ["other/three"]

      assert {:error, {:invalid_config, :older_than, _}} =
               Micelio.Storage.S3.abort_incomplete_uploads("", o ++ [older_than: -1])
    end

    test "named stores have it" do
      o = Seaweed.opts()
      Application.put_env(:micelio_storage_limits_test, Artifacts, o)
      start_upload(o, "named/one")
      Process.sleep(1_100)
      assert Artifacts.abort_incomplete_uploads("", older_than: 0) == {:ok, 1}
      assert Micelio.Storage.S3.incomplete_uploads(o) == {:ok, []}
    end

    test "other backends have none to abort" do
      o = [local_path: Tmp.dir!("abort-local")]
      assert Micelio.Storage.S3.abort_incomplete_uploads("", o) == {:ok, 0}
    end
  end

  test "quick-xml is 0.41 or later (RUSTSEC-2026-0194, -0195)" do
    lock = File.read!(Path.expand("../../../Cargo.lock", __DIR__))

    [version] =
      Regex.run(~r/name = "quick-xml"\nversion = "([^"]+)"/, lock, capture: :all_but_first)

    assert Version.compare(version, "0.41.0") != :lt
  end
end
