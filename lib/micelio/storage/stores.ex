defmodule Micelio.Storage.Stores do
  @moduledoc false
  # Built stores (Rust resources), cached by the configuration they came
  # from. A configuration change makes a new store on the next call; the
  # lookup itself is one ETS read.
  #
  # Two callers never build two stores for one configuration: the first
  # miss starts a build in a task of its own and later callers for the
  # same configuration wait for it. Builds of different configurations run
  # side by side, so a slow one (a local root with a deep tree, a TLS
  # setup) holds no other.
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
    # spec => {task ref, callers waiting for it}
    {:ok, %{building: %{}, specs: %{}}}
  end

  @impl true
  def handle_call({:build, spec, build}, from, state) do
    case {:ets.lookup(@table, spec), state.building} do
      {[{_, store}], _} ->
        {:reply, {:ok, store}, state}

      {[], %{^spec => {ref, waiting}}} ->
        {:noreply, put_in(state.building[spec], {ref, [from | waiting]})}

      {[], _} ->
        %Task{ref: ref} = Task.Supervisor.async_nolink(Micelio.Storage.Builds, build)

        {:noreply,
         %{
           state
           | building: Map.put(state.building, spec, {ref, [from]}),
             specs: Map.put(state.specs, ref, spec)
         }}
    end
  end

  @impl true
  def handle_info({ref, result}, state) when is_reference(ref) do
    Process.demonitor(ref, [:flush])
    {:noreply, finish(state, ref, result)}
  end

  # A build that crashed: its callers get the crash as an error.
  def handle_info({:DOWN, ref, :process, _pid, reason}, state),
    do:
      {:noreply, finish(state, ref, {:error, {:panic, "store build exited: #{inspect(reason)}"}})}

  defp finish(state, ref, result) do
    {spec, specs} = Map.pop(state.specs, ref)
    {{^ref, waiting}, building} = Map.pop(state.building, spec)

    with {:ok, store} <- result do
      if :ets.info(@table, :size) >= @max_stores, do: :ets.delete_all_objects(@table)
      :ets.insert(@table, {spec, store})
    end

    Enum.each(waiting, &GenServer.reply(&1, result))
    %{state | building: building, specs: specs}
  end
end
