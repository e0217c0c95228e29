defmodule Micelio.Storage.Stores do
  @moduledoc false
  # Built stores (Rust resources), cached by the configuration they came
  # from. A configuration change makes a new store on the next call; the
  # lookup itself is one ETS read. Builds go through this server so two
  # callers never build two caches for one configuration.
  use GenServer

  @table __MODULE__
  @max_stores 256

  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @doc "The store for `spec`, built by `build` (returning `{:ok, store} | {:error, _}`) on a miss."
  def fetch(spec, build) do
    case :ets.lookup(@table, spec) do
      [{_, store}] -> {:ok, store}
      [] -> GenServer.call(__MODULE__, {:build, spec, build}, :infinity)
    end
  rescue
    # The application is not started (a script calling in early): no cache.
    ArgumentError -> build.()
  end

  @impl true
  def init(nil) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    Micelio.Storage.Resolved.create_table()
    {:ok, nil}
  end

  @impl true
  def handle_call({:build, spec, build}, _from, state) do
    reply =
      case :ets.lookup(@table, spec) do
        [{_, store}] ->
          {:ok, store}

        [] ->
          with {:ok, store} <- build.() do
            if :ets.info(@table, :size) >= @max_stores, do: :ets.delete_all_objects(@table)
            :ets.insert(@table, {spec, store})
            {:ok, store}
          end
      end

    {:reply, reply, state}
  end
end
