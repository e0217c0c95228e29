defmodule Micelio.Storage.Coherence do
  @moduledoc """
  Keeps the tiered caches of connected nodes coherent.

  Every node runs one coherence server. Each tiered store it opens is
  registered here under its origin (the bucket, endpoint, region and prefix
  of an S3 origin; the root of a local one), and the server joins an OTP
  `:pg` group for that origin. Every write through a tiered store (`put`,
  the conditional puts, `delete`, `copy`, `delete_many`) is reported by the
  engine as it starts and once it is done, also when its caller timed out or
  died; the server then drops the written keys from the node's other stores
  over that origin and tells the group, whose members drop them too. On a
  LAN that takes about a millisecond.

  A node that connects or reconnects to another may have missed
  invalidations while it was cut off: it drops everything its tiered stores
  cached (`nodeup`).
  """
  use GenServer

  alias Micelio.Storage.Native

  @scope Micelio.Storage.PG

  @doc false
  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc "The `:pg` scope the groups live in."
  def scope, do: @scope

  @doc false
  # Registers a freshly built tiered store over `origin` (a string id).
  @spec watch(reference(), String.t()) :: :ok
  def watch(store, origin) do
    GenServer.call(__MODULE__, {:watch, store, origin})
  catch
    # Not started (the application is not running): nothing to share with.
    :exit, _ -> :ok
  end

  @impl true
  def init(nil) do
    :ok = :net_kernel.monitor_nodes(true)
    {:ok, %{origins: %{}}}
  end

  @impl true
  def handle_call({:watch, store, origin}, _from, state) do
    :ok = Native.store_set_write_listener(store, self(), origin)

    if not Map.has_key?(state.origins, origin),
      do: :ok = :pg.join(@scope, {__MODULE__, origin}, self())

    {:reply, :ok,
     update_in(state.origins, &Map.update(&1, origin, [store], fn s -> [store | s] end))}
  end

  @impl true
  def handle_info({:micelio_storage_written, origin, _phase, keys, writer}, state) do
    # The node's other stores over the origin (the writer has dropped its
    # own copies already), then the other nodes.
    Native.store_invalidate(origin, keys, writer)

    for pid <- :pg.get_members(@scope, {__MODULE__, origin}),
        pid != self(),
        do: send(pid, {:micelio_storage_invalidate, origin, keys})

    {:noreply, state}
  end

  def handle_info({:micelio_storage_invalidate, origin, keys}, state) do
    Native.store_invalidate(origin, keys, 0)
    {:noreply, state}
  end

  def handle_info({:nodeup, _node}, state) do
    if map_size(state.origins) > 0, do: Native.store_invalidate_all()
    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}
end
