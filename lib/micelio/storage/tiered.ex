defmodule Micelio.Storage.Tiered do
  @moduledoc """
  The tiered backend: a read cache RAM -> local disk -> optional CDN -> origin,
  where the origin is the local or the S3 backend.

  Each read is served by the fastest tier that holds the object, and a hit
  fills the tiers above it:

    * **RAM** - a byte-bounded S3-FIFO cache in Rust. A hit is answered
      inline, on the calling scheduler, with a binary that points at the
      cached bytes: no copy and no trip through the async runtime. S3-FIFO
      keeps a scan of one-time keys from flushing the hot set.
    * **disk** - one checksummed file per object under `cache_disk_path`,
      bounded by `cache_disk_max_bytes` (least recently used goes first). A
      corrupted or truncated file is deleted and fetched again, never
      returned. The cache survives a restart of the VM.
    * **CDN** - `GET <cdn_base_url>/<url-encoded key>`, bounded by
      `cdn_timeout_ms`. A 404, an error or a timeout falls through.
    * **origin** - the local or S3 backend (`origin_backend`).

  Concurrent misses for one key are merged into one fetch. Writes drop the
  cached copies before and after the origin write, and finish even when the
  caller times out or dies, so a `get` that follows never returns stale data,
  even after a crash; a key written recently also skips the CDN, which may
  still serve the old copy. Connected nodes drop each other's written keys
  through `Micelio.Storage.Coherence`, and a copy older than
  `cache_revalidate_after_ms` is checked with the origin before it is
  served. `list/1` always asks the origin.

      Micelio.Storage.put("avatars/1.png", png, backend: :tiered)
      {:ok, ^png} = Micelio.Storage.get("avatars/1.png", backend: :tiered)

  See `Micelio.Storage.Config` for the settings and `stats/1` for the
  counters of each tier.
  """
  alias Micelio.Storage.Native

  @doc """
  The counters of each tier of the tiered store that `opts` resolve to.

  `:memory` and `:disk` report `hits`, `misses`, `evictions`, `bytes`,
  `entries` and `max_bytes` (`bytes` counts keys and bookkeeping too; disk
  also reports `corrupt` files dropped). `:cdn` reports `hits`, `misses` and
  `errors`, `:origin` the `fetches` made and the `merged_waits` (reads that
  joined another's fetch). A tier that is turned off is absent.

      iex> dir = Path.join(System.tmp_dir!(), "micelio-doc-#{System.unique_integer([:positive])}")
      iex> opts = [backend: :tiered, origin_backend: :local, local_path: dir <> "/origin",
      ...>         cache_disk_path: dir <> "/cache"]
      iex> {:ok, _} = Micelio.Storage.put("a.txt", "hello", opts)
      iex> {:ok, "hello"} = Micelio.Storage.get("a.txt", opts)
      iex> {:ok, "hello"} = Micelio.Storage.get("a.txt", opts)
      iex> {:ok, stats} = Micelio.Storage.Tiered.stats(opts)
      iex> {stats.memory.hits, stats.origin.fetches}
      {1, 1}
  """
  @spec stats(keyword() | Micelio.Storage.Handle.t()) :: {:ok, map()} | {:error, term()}
  def stats(opts \\ []) do
    with {:ok, handle} <- Micelio.Storage.open(opts),
         :ok <- check_tiered(handle),
         {:ok, tiers} <- Native.store_stats(handle.store) do
      {:ok,
       Map.new(tiers, fn {tier, counters} ->
         {String.to_atom(tier), Map.new(counters, fn {k, v} -> {String.to_atom(k), v} end)}
       end)}
    end
  end

  defp check_tiered(%{backend: :tiered}), do: :ok

  defp check_tiered(%{backend: other}),
    do:
      {:error,
       {:invalid_config, :backend, "stats are kept by the :tiered backend, not #{inspect(other)}"}}
end
