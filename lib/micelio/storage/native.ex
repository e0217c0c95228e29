defmodule Micelio.Storage.Native do
  @moduledoc false
  # NIF stubs only, grouped by backend. The Rust crate is native/micelio_storage.

  @on_load :load_nif

  def load_nif do
    path = Path.join(:code.priv_dir(:micelio_storage), "native/libmicelio_storage")

    case :erlang.load_nif(String.to_charlist(path), 0) do
      :ok -> :ok
      {:error, {:reload, _}} -> :ok
      {:error, reason} -> {:error, reason}
    end
  end

  defp nif_error, do: :erlang.nif_error(:nif_not_loaded)

  # Local backend (dirty I/O schedulers).
  def local_open(_root), do: nif_error()
  def local_get(_store, _key, _with_meta, _timeout_ms), do: nif_error()
  def local_head(_store, _key, _timeout_ms), do: nif_error()
  def local_put(_store, _key, _content, _condition, _durable, _timeout_ms), do: nif_error()
  def local_delete(_store, _key, _durable, _timeout_ms), do: nif_error()
  def local_list(_store, _prefix, _timeout_ms), do: nif_error()

  # S3 backend (async: results arrive as {ref, result}).
  def s3_open(_config), do: nif_error()
  def s3_get(_store, _ref, _key, _with_meta, _timeout_ms), do: nif_error()
  def s3_head(_store, _ref, _key, _timeout_ms), do: nif_error()
  def s3_put(_store, _ref, _key, _content, _condition, _timeout_ms), do: nif_error()
  def s3_delete(_store, _ref, _key, _timeout_ms), do: nif_error()
  def s3_list(_store, _ref, _prefix, _timeout_ms), do: nif_error()

  def s3_presigned_url(_store, _ref, _key, _method, _expires_in, _unix_time, _timeout),
    do: nif_error()

  def s3_sign_headers(_creds, _region, _service, _method, _path, _query, _headers, _hash, _unix),
    do: nif_error()

  # Tiered backend: RAM inline, disk on dirty I/O, the rest async.
  def tiered_open(_config), do: nif_error()
  def tiered_get_ram(_store, _key, _with_meta), do: nif_error()
  def tiered_get_disk(_store, _key, _with_meta), do: nif_error()
  def tiered_fetch(_store, _ref, _key, _with_meta, _timeout_ms), do: nif_error()
  def tiered_head_local(_store, _key), do: nif_error()
  def tiered_head_remote(_store, _ref, _key, _timeout_ms), do: nif_error()
  def tiered_put(_store, _ref, _key, _content, _cond, _durable, _timeout_ms), do: nif_error()
  def tiered_delete(_store, _ref, _key, _durable, _timeout_ms), do: nif_error()
  def tiered_list(_store, _ref, _prefix, _timeout_ms), do: nif_error()
  def tiered_stats(_store), do: nif_error()
  def tiered_memory_charged(_store), do: nif_error()

  # Async tasks.
  def task_cancel(_guard), do: nif_error()

  # Test hooks.
  def debug_panic_sync, do: nif_error()
  def debug_panic_async(_ref), do: nif_error()
  def debug_sleep(_ref, _sleep_ms, _timeout_ms), do: nif_error()
  def debug_live_tasks, do: nif_error()
end
