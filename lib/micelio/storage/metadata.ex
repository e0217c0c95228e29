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
  - `metadata`: the user metadata (`x-amz-meta-*` on S3), names lowercase;
  - `storage_class`: the S3 storage class when the server names one
    (AWS omits it for `STANDARD`), else `nil`.
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
          metadata: %{optional(String.t()) => String.t()},
          storage_class: String.t() | nil
        }

  @doc false
  # The public map of the engine's metadata map.
  @spec from_native(map()) :: t()
  def from_native(%{last_modified_ns: modified_ns, metadata: pairs} = native) do
    native
    |> Map.drop([:last_modified_ns])
    |> Map.merge(%{
      last_modified: DateTime.from_unix!(modified_ns, :nanosecond),
      metadata: Map.new(pairs)
    })
  end
end
