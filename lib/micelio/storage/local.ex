defmodule Micelio.Storage.Local do
  @moduledoc """
  The local filesystem backend (the default).

  Keys are relative paths under `local_path`: `sessions/<id>/files/<path>` is
  stored at `<local_path>/sessions/<id>/files/<path>`. The work is done in
  Rust on dirty I/O schedulers, the way Erlang's own `File` functions run:

    * paths are resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
      so no key reaches outside the root, not even through a symlink;
    * writes go to a hidden temp file in the same directory and are renamed
      into place, so a reader sees the old or the new content, never a part;
    * with `durable: true` the file and its directory are fsynced;
    * conditional puts lock the directory (`flock`), so exactly one racer wins,
      across processes as well;
    * the ETag is derived from the inode, size and a unique nanosecond mtime
      set on every write, so `head/2` never reads the content.

  Use it through `Micelio.Storage`.
  """
  @behaviour Micelio.Storage.Backend

  alias Micelio.Storage.{Native, Stores}

  @impl true
  def open(%{local_path: root}),
    do: Stores.fetch({:local, root}, fn -> Native.local_open(root) end)

  @impl true
  def get(store, key, config), do: Native.local_get(store, key, false, config.timeout)

  @impl true
  def get_with_meta(store, key, config), do: Native.local_get(store, key, true, config.timeout)

  @impl true
  def head(store, key, config), do: Native.local_head(store, key, config.timeout)

  @impl true
  def put(store, key, content, condition, config),
    do: Native.local_put(store, key, content, condition, config.durable, config.timeout)

  @impl true
  def delete(store, key, config),
    do: Native.local_delete(store, key, config.durable, config.timeout)

  @impl true
  def list(store, prefix, config), do: Native.local_list(store, prefix, config.timeout)
end
