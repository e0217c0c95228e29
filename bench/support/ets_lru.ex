defmodule Micelio.Bench.EtsLru do
  @moduledoc false
  # The baseline cache of the tiered bench: what a BEAM app would write by
  # hand. An ETS set holds {key, value, tick}; an ordered ETS table holds
  # {tick, key} as the LRU order, updated on every hit.

  def new(capacity) do
    values =
      :ets.new(:lru_values, [:set, :public, read_concurrency: true, write_concurrency: true])

    order = :ets.new(:lru_order, [:ordered_set, :public, write_concurrency: true])
    {values, order, capacity}
  end

  def get({values, order, _}, key) do
    case :ets.lookup(values, key) do
      [{_, value, tick}] ->
        new_tick = :erlang.unique_integer([:monotonic])
        :ets.delete(order, tick)
        :ets.insert(order, {new_tick, key})
        :ets.update_element(values, key, {3, new_tick})
        {:ok, value}

      [] ->
        :miss
    end
  end

  def put({values, order, capacity}, key, value) do
    tick = :erlang.unique_integer([:monotonic])

    case :ets.lookup(values, key) do
      [{_, _, old}] -> :ets.delete(order, old)
      [] -> :ok
    end

    :ets.insert(values, {key, value, tick})
    :ets.insert(order, {tick, key})

    if :ets.info(values, :size) > capacity do
      oldest = :ets.first(order)
      [{_, victim}] = :ets.lookup(order, oldest)
      :ets.delete(order, oldest)
      :ets.delete(values, victim)
    end

    :ok
  end
end
