defmodule Micelio.Storage.Application do
  @moduledoc false
  use Application

  @impl true
  def start(_type, _args) do
    children = [
      Micelio.Storage.Stores,
      Micelio.Storage.Log,
      %{id: :pg, start: {:pg, :start_link, [Micelio.Storage.Coherence.scope()]}},
      Micelio.Storage.Coherence
    ]

    Supervisor.start_link(children,
      strategy: :one_for_one,
      name: __MODULE__
    )
  end
end
