defmodule Micelio.Storage.Resolved.Watch do
  @moduledoc false
  # The clock of the environment check of remembered resolutions
  # (`Micelio.Storage.Resolved`): every `Resolved.env_check_ms/0` it moves
  # the check's clock, so calls with options re-read their variables on
  # their next call, and it re-reads the variables of the handle of calls
  # without options itself, so those calls never read a clock or a
  # variable (reading the clock alone cost most of a RAM hit).
  use GenServer

  alias Micelio.Storage.Resolved

  def start_link(_opts), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    Resolved.create_epoch()
    schedule()
    {:ok, nil}
  end

  @impl true
  def handle_info(:tick, state) do
    Resolved.tick()
    schedule()
    {:noreply, state}
  end

  defp schedule, do: Process.send_after(self(), :tick, Resolved.env_check_ms())
end
