defmodule Micelio.Storage.Application do
  @moduledoc false
  use Application

  require Logger

  @impl true
  def start(_type, _args) do
    warn_misplaced_store_config()

    children = [
      {Task.Supervisor, name: Micelio.Storage.Builds},
      Micelio.Storage.Stores,
      Micelio.Storage.Resolved.Watch,
      Micelio.Storage.Log,
      %{id: :pg, start: {:pg, :start_link, [Micelio.Storage.Coherence.scope()]}},
      Micelio.Storage.Coherence
    ]

    Supervisor.start_link(children,
      strategy: :one_for_one,
      name: __MODULE__
    )
  end

  # `config :micelio_storage, MyApp.Sessions, ...` is read by nothing: a
  # store module reads the config of its own `otp_app`. Say so, instead of
  # running on defaults.
  defp warn_misplaced_store_config do
    for {key, _} <- Application.get_all_env(:micelio_storage),
        is_atom(key),
        key != Micelio.Storage,
        String.starts_with?(Atom.to_string(key), "Elixir.") do
      Logger.warning(
        "config :micelio_storage, #{inspect(key)} is not read: a store module " <>
          "(use Micelio.Storage, otp_app: :my_app) reads config :my_app, #{inspect(key)}; " <>
          "the default store reads config :micelio_storage, Micelio.Storage"
      )
    end

    :ok
  end
end
