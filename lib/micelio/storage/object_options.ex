defmodule Micelio.Storage.ObjectOptions do
  @moduledoc """
  The per-call options that describe an object or a transfer rather than
  a store. They sit beside the storage options of a call and are split
  off before the configuration is resolved:

    * `:content_type`, `:cache_control`, `:content_disposition`,
      `:content_encoding` - stored with the object and given back by
      `Micelio.Storage.head/2` (and sent by S3 as response headers); a put
      without `:content_type` stores the type the key's extension implies
      (`"logo.png"` is `image/png`), else `application/octet-stream`;
    * `:metadata` - `%{"name" => "value"}` user metadata; names are
      case-insensitive (stored lowercase: letters, digits, `.`, `_`, `-`),
      values printable ASCII, 2 KiB in all (S3's limit);
    * `:storage_class` - the S3 storage class (`"STANDARD_IA"`,
      `"GLACIER_IR"`, ...), given back by `Micelio.Storage.head/2`;
    * `:acl` - a canned ACL: `:private`, `:public_read`,
      `:public_read_write`, `:authenticated_read`, `:aws_exec_read`,
      `:bucket_owner_read` or `:bucket_owner_full_control`;
    * `:tags` - `%{"name" => "value"}` object tags (at most 10; names up to
      128 characters and values up to 256, of letters, digits, spaces and
      `+ - = . _ : / @`, as S3 allows), read back with
      `Micelio.Storage.S3.get_tags/2`. These three need the S3
      backend; elsewhere a put is `{:error, {:invalid_config, :backend, _}}`;
    * `:range` - `{offset, length}` for `get/2`, `get_with_metadata/2` and
      `stream/2`; a `length` of `nil` reads to the end;
    * `:progress` - `fn done, total -> ... end` for `put_file/3`,
      `put_stream/3` and `get_file/3`; `total` is `nil` when unknown;
    * `:transfer_timeout` - milliseconds a whole transfer may take
      (default: no limit). Each step of a transfer (a part, a chunk) is
      bounded by `:timeout` instead, so a large transfer needs no raised
      timeout while a stalled one still ends;
    * `:prefix` - the key prefix of `Micelio.Storage.put_content_addressed/2`;
    * `:if_absent` - `true` makes `Micelio.Storage.copy/3` copy only where
      nothing is (`{:error, :precondition_failed}` otherwise);
    * `:page_size` - keys per page of `Micelio.Storage.stream_keys/2`;
    * `:storage` - a `Micelio.Storage.Handle` to use instead of resolving
      the configuration.
  """

  @attribute_keys [:content_type, :cache_control, :content_disposition, :content_encoding]
  @keys @attribute_keys ++
          [
            :metadata,
            :storage_class,
            :acl,
            :tags,
            :range,
            :progress,
            :transfer_timeout,
            :storage,
            :prefix,
            :page_size,
            :if_absent
          ]

  @doc "The option names this module owns."
  @spec keys() :: [atom()]
  def keys, do: @keys

  @doc """
  Splits `opts` into object options and storage options. A handle passed
  as `opts` is storage.

      iex> Micelio.Storage.ObjectOptions.split(content_type: "text/plain", timeout: 5_000)
      {[content_type: "text/plain"], [timeout: 5_000]}
  """
  @spec split(keyword() | Micelio.Storage.Handle.t() | term()) :: {keyword(), term()}
  def split(opts) when is_list(opts) do
    # An improper list passes on whole, to be refused by the resolution
    # without a list function raising on it first.
    if Micelio.Storage.Config.proper_list?(opts) and
         Enum.any?(opts, &match?({k, _} when k in @keys, &1)),
       do: Keyword.split(opts, @keys),
       else: {[], opts}
  end

  def split(other), do: {[], other}

  @doc """
  The attributes as the engine takes them: `nil`, or a map of the four
  headers, the metadata pairs, the storage class, the ACL and the tags.
  """
  @spec attributes(keyword()) :: {:ok, nil | map()} | {:error, term()}
  def attributes(opts) do
    with {:ok, headers} <- headers(opts),
         {:ok, metadata} <- metadata(Keyword.get(opts, :metadata)),
         {:ok, storage_class} <- text(:storage_class, Keyword.get(opts, :storage_class)),
         {:ok, acl} <- acl(Keyword.get(opts, :acl)),
         {:ok, tags} <- tags(Keyword.get(opts, :tags)) do
      if Enum.all?(headers, &is_nil/1) and metadata == [] and storage_class == nil and
           acl == nil and tags == [],
         do: {:ok, nil},
         else:
           {:ok,
            @attribute_keys
            |> Enum.zip(headers)
            |> Map.new()
            |> Map.merge(%{metadata: metadata, storage_class: storage_class, acl: acl, tags: tags})}
    end
  end

  @acls %{
    private: "private",
    public_read: "public-read",
    public_read_write: "public-read-write",
    authenticated_read: "authenticated-read",
    aws_exec_read: "aws-exec-read",
    bucket_owner_read: "bucket-owner-read",
    bucket_owner_full_control: "bucket-owner-full-control"
  }

  defp acl(nil), do: {:ok, nil}
  defp acl(name) when is_map_key(@acls, name), do: {:ok, Map.fetch!(@acls, name)}

  defp acl(other),
    do:
      {:error,
       {:invalid_config, :acl,
        "expected one of #{inspect(Map.keys(@acls) |> Enum.sort())}, got #{shape(other)}"}}

  defp tags(nil), do: {:ok, []}

  defp tags(map) when is_map(map) do
    if Enum.all?(map, fn {k, v} -> is_binary(k) and is_binary(v) end),
      do: {:ok, Enum.sort(Map.to_list(map))},
      else: {:error, {:invalid_config, :tags, "expected a map of string names to strings"}}
  end

  defp tags(other),
    do: {:error, {:invalid_config, :tags, "expected a map, got #{shape(other)}"}}

  defp text(_key, nil), do: {:ok, nil}
  defp text(_key, value) when is_binary(value), do: {:ok, value}

  defp text(key, other),
    do: {:error, {:invalid_config, key, "expected a string, got #{shape(other)}"}}

  defp headers(opts) do
    Enum.reduce_while(@attribute_keys, {:ok, []}, fn key, {:ok, acc} ->
      case Keyword.get(opts, key) do
        nil ->
          {:cont, {:ok, acc ++ [nil]}}

        value when is_binary(value) ->
          {:cont, {:ok, acc ++ [value]}}

        other ->
          {:halt, {:error, {:invalid_config, key, "expected a string, got #{shape(other)}"}}}
      end
    end)
  end

  defp metadata(nil), do: {:ok, []}

  defp metadata(map) when is_map(map) do
    if Enum.all?(map, fn {k, v} -> is_binary(k) and is_binary(v) end),
      do: {:ok, Enum.sort(Map.to_list(map))},
      else: {:error, {:invalid_config, :metadata, "expected a map of string names to strings"}}
  end

  defp metadata(other),
    do:
      {:error,
       {:invalid_config, :metadata,
        "expected a map of string names to strings, got #{shape(other)}"}}

  @doc """
  The `:range` as the engine takes it: `nil` or `{offset, length | nil}`.
  Also takes an Elixir `Range` of byte positions (`0..4`: the first five
  bytes).
  """
  @spec range(keyword()) ::
          {:ok, nil | {non_neg_integer(), non_neg_integer() | nil}} | {:error, term()}
  def range(opts) do
    case Keyword.get(opts, :range) do
      nil ->
        {:ok, nil}

      {offset, length} = range
      when is_integer(offset) and offset >= 0 and
             (is_nil(length) or (is_integer(length) and length >= 0)) ->
        {:ok, range}

      # An Elixir range of byte positions, both ends included, as
      # `binary_part/3` users write it: `0..4` is the first five bytes.
      %Range{first: first, last: last, step: 1} when first >= 0 and last >= first ->
        {:ok, {first, last - first + 1}}

      %Range{} = other ->
        {:error,
         {:invalid_config, :range,
          "expected an increasing range of byte positions with step 1, such as 0..4, got #{inspect(other)}"}}

      other ->
        {:error,
         {:invalid_config, :range,
          "expected {offset, length} with non-negative integers (length may be nil) or a range of byte positions such as 0..4, got #{shape(other)}"}}
    end
  end

  @doc "The `:progress` function, or `nil`."
  @spec progress(keyword()) ::
          {:ok, nil | (non_neg_integer(), non_neg_integer() | nil -> any())} | {:error, term()}
  def progress(opts) do
    case Keyword.get(opts, :progress) do
      nil ->
        {:ok, nil}

      fun when is_function(fun, 2) ->
        {:ok, fun}

      other ->
        {:error, {:invalid_config, :progress, "expected a 2-arity function, got #{shape(other)}"}}
    end
  end

  @doc "The `:transfer_timeout` in ms, `0` for none."
  @spec transfer_timeout(keyword()) :: {:ok, non_neg_integer()} | {:error, term()}
  def transfer_timeout(opts) do
    case Keyword.get(opts, :transfer_timeout) do
      nil ->
        {:ok, 0}

      :infinity ->
        {:ok, 0}

      ms when is_integer(ms) and ms > 0 ->
        {:ok, ms}

      other ->
        {:error,
         {:invalid_config, :transfer_timeout,
          "expected a positive integer (ms) or :infinity, got #{shape(other)}"}}
    end
  end

  defp shape(term), do: Micelio.Storage.Config.shape(term)
end
