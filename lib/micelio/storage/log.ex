defmodule Micelio.Storage.Log do
  @moduledoc """
  The engine's log events, through `Logger`: S3 retries at `:debug`,
  credential refreshes at `:info`, and give-ups after the last retry and
  failed refreshes at `:warning`. Each carries metadata: `endpoint`,
  `operation`, `attempt` (retries) or `source` (credentials). No event holds
  a secret, a key or a signature.

  Silence them, or keep only warnings, by this module's level:

      Logger.put_module_level(Micelio.Storage.Log, :warning)
      # or, at compile time, in config/config.exs:
      config :logger, compile_time_purge_matching: [[module: Micelio.Storage.Log]]
  """
  use GenServer
  require Logger

  @doc false
  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @impl true
  def init(nil) do
    :ok = Micelio.Storage.Native.set_log_sink(self())
    {:ok, nil}
  end

  @impl true
  def handle_info({:micelio_storage_log, level, message, metadata}, state) do
    Logger.log(level, message, [micelio_storage: true] ++ metadata)
    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}
end
