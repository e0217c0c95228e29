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

  Use it through `Micelio.Storage` (the default backend). The engine is
  `native/micelio_storage_core/src/local.rs`.
  """
end
