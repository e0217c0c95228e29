defmodule Micelio.Storage.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    Supervisor.start_link([Micelio.Storage.Stores, Micelio.Storage.Log],
      strategy: :one_for_one,
      name: __MODULE__
    )
  end
end
