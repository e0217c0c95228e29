defmodule Micelio.Storage.Operation do
  @moduledoc false
  # The requests the engine runs (`Micelio.Storage.Store.run/2`), built in
  # this one place. Each is `{name, %{field => value}}` (a bare atom when it
  # has no fields), the shape of the engine's `Request`, a rustler
  # `NifTaggedEnum` (native/micelio_storage/src/nif/operation.rs): a field
  # misspelled on either side fails to decode as a whole,
  # `{:error, {:invalid_config, :operation, _}}`, instead of being read in
  # the wrong place as a positional tuple would be.

  @type t :: atom() | {atom(), map()}

  @doc "A read; `range` is `nil` or `{offset, length}`."
  def get(key, with_meta, range \\ nil),
    do: {:get, %{key: key, with_meta: with_meta, range: range}}

  def head(key), do: {:head, %{key: key}}

  @doc "A write; `condition` is `:always`, `:if_none_match` or `{:if_match, etag}`."
  def put(key, content, condition, durable, attributes),
    do:
      {:put,
       %{
         key: key,
         content: content,
         condition: condition,
         durable: durable,
         attributes: attributes
       }}

  def delete(key, durable), do: {:delete, %{key: key, durable: durable}}
  def list(prefix), do: {:list, %{prefix: prefix}}

  def copy(from, to, durable, if_absent),
    do: {:copy, %{from: from, to: to, durable: durable, if_absent: if_absent}}

  def delete_many(keys, durable), do: {:delete_many, %{keys: keys, durable: durable}}

  @doc "A presigned URL; `headers` are the signed and response headers."
  def presigned_url(key, method, expires_in, unix_time, headers) do
    {:presigned_url,
     %{
       key: key,
       method: method,
       expires_in: expires_in,
       unix_time: unix_time,
       content_type: headers[:content_type],
       response_content_type: headers[:response_content_type],
       response_content_disposition: headers[:response_content_disposition]
     }}
  end

  def presigned_post(key_or_prefix, conditions),
    do: {:presigned_post, %{key_or_prefix: key_or_prefix, conditions: conditions}}

  def health, do: :health
  def incomplete_uploads, do: :incomplete_uploads

  def abort_incomplete_uploads(prefix, older_than_ms),
    do: {:abort_incomplete_uploads, %{prefix: prefix, older_than_ms: older_than_ms}}

  @doc "A page of keys after `start_after` (`nil`: from the start)."
  def list_page(prefix, start_after, limit),
    do: {:list_page, %{prefix: prefix, start_after: start_after, limit: limit}}

  def list_level(prefix), do: {:list_level, %{prefix: prefix}}
  def public_url(key), do: {:public_url, %{key: key}}
  def create_bucket, do: :create_bucket
  def put_cors(rules), do: {:put_cors, %{rules: rules}}
  def get_cors, do: :get_cors

  def put_lifecycle_abort_incomplete(days),
    do: {:put_lifecycle_abort_incomplete, %{days: days}}

  @doc "Replaces the tags of `key` with `tags`, a list of `{name, value}`."
  def put_tags(key, tags), do: {:put_tags, %{key: key, tags: tags}}
  def get_tags(key), do: {:get_tags, %{key: key}}
end
