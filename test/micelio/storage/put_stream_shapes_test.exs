defmodule Micelio.Storage.PutStreamShapesTest do
  # put_stream/3 stores exactly what `Enum.to_list/1` of the enumerable
  # gives, whatever its shape, on every backend. Enumerables that hand
  # their last element with `{:halted, acc}` (Stream.take/2, hand-written
  # ones) lost it once.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{Seaweed, Tmp}
  alias Micelio.Storage.Test.Enumerables.LastInFinal

  defp shapes(file) do
    [
      list: ["a", "b", "c"],
      iodata_list: [["a", ?b], "c", [[<<1, 2>>]]],
      empty: [],
      empty_chunks: ["", "x", [], "", "y", ""],
      range_mapped: Stream.map(1..5, &Integer.to_string/1),
      take_all: Stream.take(["a", "b", "c"], 3),
      take_cycle: Stream.take(Stream.cycle(["xy"]), 4),
      take_some: Stream.take(["a", "b", "c"], 2),
      take_while: Stream.take_while(["a", "b", "stop", "c"], &(&1 != "stop")),
      transform:
        Stream.transform(["a", "b", "c", "d"], 0, fn x, n ->
          if n < 3, do: {[x, x], n + 1}, else: {:halt, n}
        end),
      resource:
        Stream.resource(
          fn -> 3 end,
          fn
            0 -> {:halt, 0}
            n -> {[String.duplicate("r", n)], n - 1}
          end,
          fn _ -> :ok end
        ),
      flat_map: Stream.flat_map(["a", "b"], &[&1, &1 <> "!"]),
      chunk_every: Stream.chunk_every(~w(a b c d e), 2),
      concat: Stream.concat([["a"], Stream.take(["b", "c"], 2), ["d"]]),
      zip: Stream.zip(["a", "b", "c"], ["1", "2"]) |> Stream.map(fn {x, y} -> [x, y] end),
      file_cut_short: File.stream!(file, [], 4) |> Stream.take(2),
      large_take: Stream.take(Stream.repeatedly(fn -> :binary.copy("z", 300_000) end), 4),
      last_halts: %LastInFinal{items: ["h1", "h2", "h3"], final: :halted},
      done_with_element: %LastInFinal{items: ["s1", "s2"], final: :done}
    ]
  end

  defp expected(enum), do: IO.iodata_to_binary(Enum.to_list(enum))

  defp check_all(opts) do
    file = Path.join(Tmp.dir!("shapes-src"), "eight")
    File.write!(file, "12345678")

    for {name, enum} <- shapes(file) do
      key = "shapes/#{name}"
      assert {:ok, ^key} = Storage.put_stream(key, enum, opts), "#{name}"
      assert Storage.get(key, opts) == {:ok, expected(enum)}, "#{name} stored other bytes"
    end
  end

  test "the enumerables of the issue store every element" do
    # The three cases the bug report gave.
    o = [local_path: Tmp.dir!("shapes-report")]
    {:ok, _} = Storage.put_stream("k", Stream.take(["a", "b", "c"], 3), o)
    assert Storage.get("k", o) == {:ok, "abc"}
    {:ok, _} = Storage.put_stream("k", Stream.take(Stream.cycle(["xy"]), 4), o)
    assert Storage.get("k", o) == {:ok, "xyxyxyxy"}
    path = Path.join(Tmp.dir!("shapes-report-src"), "f")
    File.write!(path, "12345678")
    {:ok, _} = Storage.put_stream("k", File.stream!(path, [], 4) |> Stream.take(2), o)
    assert Storage.get("k", o) == {:ok, "12345678"}
  end

  test "on the memory backend" do
    check_all(backend: :memory, memory_name: "shapes-#{System.unique_integer([:positive])}")
  end

  test "on the local backend" do
    check_all(local_path: Tmp.dir!("shapes-local"))
  end

  test "on the tiered backend over local" do
    dir = Tmp.dir!("shapes-tiered")

    check_all(
      backend: :tiered,
      origin_backend: :local,
      local_path: Path.join(dir, "origin"),
      cache_disk_path: Path.join(dir, "cache")
    )
  end

  @tag :s3
  test "on the s3 backend" do
    :ok = Seaweed.ensure_started()
    check_all(Seaweed.opts())
  end

  test "put_content_addressed of a stream keeps the last element" do
    o = [local_path: Tmp.dir!("shapes-cas")]
    content = Stream.take(["a", "b", "c"], 3)
    digest = Base.encode16(:crypto.hash(:sha256, "abc"), case: :lower)
    key = "cas/sha256:" <> digest
    assert {:ok, ^key} = Storage.put_content_addressed({:stream, content}, [prefix: "cas/"] ++ o)
    assert Storage.get(key, o) == {:ok, "abc"}
  end

  test "a chunk that is not iodata is an error, not a crash or a short object" do
    o = [local_path: Tmp.dir!("shapes-bad")]
    assert {:error, {:invalid_config, :content, _}} = Storage.put_stream("k", ["a", :b], o)
    assert Storage.get("k", o) == {:error, :not_found}

    assert {:error, {:invalid_config, :content, _}} =
             Storage.put_content_addressed({:stream, ["a", :b]}, [prefix: "c/"] ++ o)
  end
end
