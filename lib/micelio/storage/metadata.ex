defmodule Micelio.Storage.Metadata do
  @moduledoc """
  The metadata of a stored object, as `Micelio.Storage.head/2` returns it
  (and `Micelio.Storage.get_with_metadata/2`, with `:content` beside it):
  a plain map, so it can be matched and compared as one.

  - `size`: bytes;
  - `etag`: the store's entity tag, unquoted (what `put_if_match/4` takes);
  - `last_modified`: a UTC `DateTime`;
  - `content_type`, `cache_control`, `content_disposition`,
    `content_encoding`: as stored, or `nil`;
  - `metadata`: the user metadata (`x-amz-meta-*` on S3), names lowercase.
  """

  @typedoc "Object metadata: see the module doc."
  @type t :: %{
          size: non_neg_integer(),
          etag: String.t(),
          last_modified: DateTime.t(),
          content_type: String.t() | nil,
          cache_control: String.t() | nil,
          content_disposition: String.t() | nil,
          content_encoding: String.t() | nil,
          metadata: %{optional(String.t()) => String.t()}
        }

  @doc false
  # The metadata map of the engine's tuple.
  @spec from_native(tuple()) :: t()
  def from_native({size, etag, modified_ns, type, cache, disposition, encoding, pairs}) do
    %{
      size: size,
      etag: etag,
      last_modified: DateTime.from_unix!(modified_ns, :nanosecond),
      content_type: type,
      cache_control: cache,
      content_disposition: disposition,
      content_encoding: encoding,
      metadata: Map.new(pairs)
    }
  end
end
