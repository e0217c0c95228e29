defmodule Micelio.Storage.Test.StoreGenerators do
  @moduledoc false
  # StreamData generators of keys (the key grammar, awkward ones included),
  # contents, enumerable shapes and command sequences.
  import StreamData

  @awkward [
    "a b",
    "+",
    "%2F",
    "&",
    "?",
    "#",
    "=",
    "~",
    "*",
    "'",
    "(",
    "ünï",
    "e\u0301",
    "\u00e9",
    "🙂",
    "x.y",
    "-_"
  ]

  @doc "One segment of a valid key."
  def segment do
    frequency([
      {6, string(:alphanumeric, min_length: 1, max_length: 8)},
      {3, member_of(@awkward)},
      {2,
       bind(list_of(member_of(@awkward), min_length: 1, max_length: 3), &constant(Enum.join(&1)))},
      {1, string(:alphanumeric, length: 255)},
      {1, constant("a")}
    ])
  end

  @doc "A valid key: 1 to 3 segments, so keys share prefixes at / boundaries."
  def key do
    bind(list_of(segment(), min_length: 1, max_length: 3), &constant(Enum.join(&1, "/")))
  end

  @doc "Keys every backend must reject alike."
  def invalid_key do
    member_of([
      "",
      "/abs",
      "a//b",
      "a/",
      "a/../b",
      ".",
      "a/./b",
      "a\\b",
      "a\nb",
      "a/.micelio-tmp-x",
      String.duplicate("s", 256),
      <<0xFF, 0xFE>>,
      Enum.map_join(1..103, "/", fn _ -> "kkkkkkkkk" end)
    ])
  end

  @doc "Content: mostly small, sometimes empty, rarely past a 5 MiB multipart threshold."
  def content(large?) do
    frequency(
      [
        {40, binary(max_length: 64)},
        {12, binary(min_length: 1_000, max_length: 70_000)},
        {4, constant("")}
      ] ++ if(large?, do: [{1, constant(:large)}], else: [])
    )
    |> map(fn
      :large -> :binary.copy(<<1, 2, 3, 4, 5, 6, 7, 8>>, div(5_500_000, 8))
      bin -> bin
    end)
  end

  @doc "The same content as iodata of a random shape."
  def iodata_of(content) do
    bind(integer(0..3), fn cuts -> constant(shape_iodata(content, cuts)) end)
  end

  defp shape_iodata(content, 0), do: content

  defp shape_iodata(content, cuts) do
    size = byte_size(content)
    at = div(size, cuts + 1)

    if at == 0,
      do: [content],
      else: [
        binary_part(content, 0, at),
        [shape_iodata(binary_part(content, at, size - at), cuts - 1)]
      ]
  end

  @doc "An enumerable shape that yields `content`: `{name, enumerable}`."
  def enumerable_of(content) do
    chunks = chunk(content, max(div(byte_size(content), 3), 1))

    member_of([
      {:list, chunks},
      {:take, Stream.take(chunks ++ ["never"], length(chunks))},
      {:resource,
       Stream.resource(
         fn -> chunks end,
         fn
           [] -> {:halt, []}
           [c | rest] -> {[c], rest}
         end,
         fn _ -> :ok end
       )},
      {:flat_map, Stream.flat_map([chunks], & &1)},
      {:empty_chunks, Enum.intersperse(chunks, "") ++ [[]]},
      {:iodata_chunks, Enum.map(chunks, &[&1])}
    ])
  end

  defp chunk(<<>>, _), do: []

  defp chunk(bin, n) when byte_size(bin) <= n, do: [bin]

  defp chunk(bin, n),
    do: [binary_part(bin, 0, n) | chunk(binary_part(bin, n, byte_size(bin) - n), n)]

  @doc "Object options: none, or a content type and metadata."
  def object_options do
    frequency([
      {3, constant([])},
      {1,
       fixed_map(%{
         content_type: member_of(["text/plain", "image/png", "application/json"]),
         metadata:
           map_of(
             member_of(["owner", "build", "x"]),
             string(:alphanumeric, min_length: 1, max_length: 6),
             max_length: 2
           )
       })
       |> map(&Map.to_list/1)}
    ])
  end

  @doc """
  A command sequence over a small pool of keys (so commands meet), each
  command a tuple the runner executes against the store and the model.
  """
  def commands(opts \\ []) do
    large? = Keyword.get(opts, :large, true)
    max = Keyword.get(opts, :max_commands, 30)

    bind(uniq_list_of(key(), min_length: 1, max_length: 4), fn keys ->
      pick = member_of(keys)
      prefixes = member_of(["" | Enum.flat_map(keys, &prefixes_of/1)])
      list_of(command(pick, prefixes, large?), max_length: max)
    end)
  end

  defp prefixes_of(key) do
    parts = String.split(key, "/")
    for n <- 1..length(parts), do: Enum.join(Enum.take(parts, n), "/") <> "/"
  end

  defp command(key, prefix, large?) do
    one_of([
      tuple(
        {constant(:put), key, bind(content(large?), &tuple({constant(&1), iodata_of(&1)})),
         object_options()}
      ),
      tuple(
        {constant(:put_stream), key,
         bind(content(false), &tuple({constant(&1), enumerable_of(&1)}))}
      ),
      tuple({constant(:put_file), key, content(large?)}),
      tuple({constant(:get), key}),
      tuple(
        {constant(:get_range), key,
         tuple({integer(0..80), one_of([constant(nil), integer(0..50)])})}
      ),
      tuple({constant(:head), key}),
      tuple({constant(:get_with_metadata), key}),
      tuple({constant(:exists?), key}),
      tuple({constant(:list), prefix}),
      tuple({constant(:list_with_delimiter), prefix}),
      tuple({constant(:stream_keys), prefix}),
      tuple({constant(:copy), key, key}),
      tuple({constant(:delete), key}),
      tuple({constant(:delete_many), list_of(key, max_length: 3)}),
      tuple({constant(:put_if_none_match), key, binary(max_length: 16)}),
      tuple({constant(:put_if_match), key, binary(max_length: 16), member_of([:right, :wrong])}),
      tuple({constant(:invalid), invalid_key()})
    ])
  end
end
