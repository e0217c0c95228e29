defmodule Micelio.Storage.Native do
  @moduledoc false
  # NIF stubs only. The Rust crate is native/micelio_storage; one family of
  # store NIFs serves every backend (see Micelio.Storage.Store).

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

  # Stores: open, run an operation (async or on a dirty scheduler), cache tiers.
  def store_open(_backend, _settings), do: nif_error()
  def store_run(_store, _ref, _operation, _timeout_ms), do: nif_error()
  def store_run_dirty(_store, _operation, _timeout_ms), do: nif_error()
  def store_get_cached(_store, _key, _with_meta), do: nif_error()
  def store_get_disk(_store, _key, _with_meta), do: nif_error()
  def store_stats(_store), do: nif_error()
  def store_disk_file(_store, _key), do: nif_error()
  def store_capabilities(_store), do: nif_error()
  def s3_profile(_provider, _endpoint), do: nif_error()
  def engine_setting_names, do: nif_error()

  # Transfers larger than memory.
  # Each transfer takes one options map (see Micelio.Storage.Transfer).
  def store_put_file(_store, _ref, _key, _path, _options), do: nif_error()
  def store_get_file(_store, _ref, _key, _path, _options), do: nif_error()
  def store_put_stream(_store, _ref, _key, _options), do: nif_error()

  def stream_feed(_feeder, _data), do: nif_error()
  def store_get_stream(_store, _ref, _key, _options), do: nif_error()
  def stream_demand(_reader, _n), do: nif_error()

  # The key rule a key breaks, in words (nil: none on its own).
  def key_rule(_key), do: nif_error()
  def store_memory_charged(_store), do: nif_error()

  # Cache coherence across nodes (tiered stores).
  def store_set_write_listener(_store, _pid, _tag), do: nif_error()
  def store_invalidate(_origin, _keys, _except_writer), do: nif_error()
  def store_invalidate_all, do: nif_error()

  # The SigV4 signer on its own.
  def s3_sign_headers(_creds, _region, _service, _method, _path, _query, _headers, _hash, _unix),
    do: nif_error()

  # Log events of the engine, sent to a process.
  def set_log_sink(_pid), do: nif_error()

  # Async tasks.
  def task_cancel(_guard), do: nif_error()

  # Test hooks.
  def debug_panic_sync, do: nif_error()
  def debug_panic_async(_ref), do: nif_error()
  def debug_sleep(_ref, _sleep_ms, _timeout_ms), do: nif_error()
  def debug_live_tasks, do: nif_error()
end
