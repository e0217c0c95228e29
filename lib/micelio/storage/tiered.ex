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

  Concurrent misses for one key are merged into one fetch. `put/2` and
  `delete/1` go to the origin first, then invalidate RAM and disk on this
  node, so a `get` that follows never returns stale data; a key written
  recently also skips the CDN, which may still serve the old copy. `list/1`
  always asks the origin.

      Micelio.Storage.put("avatars/1.png", png, backend: :tiered)
      {:ok, ^png} = Micelio.Storage.get("avatars/1.png", backend: :tiered)

  See `Micelio.Storage.Config` for the settings and `stats/1` for the
  counters of each tier.
  """
  @behaviour Micelio.Storage.Backend

  alias Micelio.Storage.{Async, Native, S3, Stores}

  @impl true
  def open(config) do
    with {:ok, native} <- native_config(config) do
      spec = {:tiered, Map.put(native, :s3, s3_spec(config))}

      # Rust keeps one live store per fingerprint, so a store rebuilt after
      # the Elixir cache dropped it is the same store, caches included.
      Stores.fetch(spec, fn ->
        fingerprint = :crypto.hash(:sha256, :erlang.term_to_binary(spec)) |> Base.encode16()
        Native.tiered_open(Map.put(native, :fingerprint, fingerprint))
      end)
    end
  end

  defp native_config(config) do
    base = %{
      memory_max_bytes: config.cache_memory_max_bytes,
      disk_path: config.cache_disk_path,
      disk_max_bytes: config.cache_disk_max_bytes,
      cdn_base_url: config.cdn_base_url,
      cdn_timeout_ms: config.cdn_timeout_ms,
      local_path: nil,
      s3: nil
    }

    case config.origin_backend do
      :local ->
        {:ok, %{base | local_path: config.local_path}}

      :s3 ->
        with :ok <- S3.check_required(config), do: {:ok, %{base | s3: S3.native_config(config)}}
    end
  end

  defp s3_spec(%{origin_backend: :s3} = config), do: S3.spec(config)
  defp s3_spec(_config), do: nil

  # RAM inline, then disk on a dirty scheduler, then CDN/origin on the runtime.
  @impl true
  def get(store, key, config) do
    case Native.tiered_get_ram(store, key, false) do
      :miss -> below_ram(store, key, false, config)
      hit_or_error -> hit_or_error
    end
  end

  @impl true
  def get_with_meta(store, key, config) do
    case Native.tiered_get_ram(store, key, true) do
      :miss -> below_ram(store, key, true, config)
      hit_or_error -> hit_or_error
    end
  end

  defp below_ram(store, key, with_meta, %{timeout: t}) do
    with :miss <- Native.tiered_get_disk(store, key, with_meta) do
      Async.call(t, &Native.tiered_fetch(store, &1, key, with_meta, t))
    end
  end

  @impl true
  def head(store, key, %{timeout: t}) do
    with :miss <- Native.tiered_head_local(store, key) do
      Async.call(t, &Native.tiered_head_remote(store, &1, key, t))
    end
  end

  @impl true
  def put(store, key, content, condition, %{timeout: t, durable: durable}),
    do: Async.call(t, &Native.tiered_put(store, &1, key, content, condition, durable, t))

  @impl true
  def delete(store, key, %{timeout: t, durable: durable}),
    do: Async.call(t, &Native.tiered_delete(store, &1, key, durable, t))

  @impl true
  def list(store, prefix, %{timeout: t}),
    do: Async.call(t, &Native.tiered_list(store, &1, prefix, t))

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
         {:ok, tiers} <- Native.tiered_stats(handle.store) do
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
