defmodule Micelio.Storage.Resolved do
  @moduledoc false
  # Keyword options already resolved to an open store (a handle).
  #
  # Resolving reads about twenty settings through the options, the app
  # config and the environment (about 11 µs, more than a local read of a
  # small file). A remembered resolution costs a digest, one ETS read and a
  # re-read of the environment variables the resolution read, and is used
  # only while those still hold the values it saw, so `Application.put_env/3`
  # and `System.put_env/2` take effect on the next call as before.
  #
  # Keys are digests and values hold no secret (a secret variable is kept as
  # its digest): the table can be dumped (observer, crash dumps) without
  # leaking credentials.

  alias Micelio.Storage.{Config, Store}

  @table __MODULE__
  @max_entries 1024

  @doc "Creates the table; its owner is the `Micelio.Storage.Stores` server."
  def create_table do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
  end

  @doc """
  `{:ok, handle}` for `opts` under the application config `app` (from
  `Config.app_env/0`, or a named store's), from the table or resolved now.
  """
  def fetch(opts, app \\ Config.app_env()) do
    digest = :crypto.hash(:sha256, :erlang.term_to_binary({opts, app}))

    case :ets.lookup(@table, digest) do
      [{_, env, handle}] ->
        if current?(env), do: {:ok, handle}, else: remember(digest, opts, app)

      [] ->
        remember(digest, opts, app)
    end
  rescue
    # The application is not started (a script calling in early): no table.
    ArgumentError ->
      with {:ok, handle, _env} <- resolve_now(opts, app), do: {:ok, handle}
  end

  # The environment values stored are the ones the resolution read, so a
  # change racing it is seen by the next call's check.
  defp remember(digest, opts, app) do
    with {:ok, handle, env} <- resolve_now(opts, app) do
      if :ets.info(@table, :size) >= @max_entries, do: :ets.delete_all_objects(@table)
      :ets.insert(@table, {digest, Enum.map(env, &snapshot/1), handle})
      {:ok, handle}
    end
  end

  defp resolve_now(opts, app) do
    with {:ok, config, env} <- Config.resolve_tracked(opts, app),
         {:ok, handle} <- Store.open(config) do
      {:ok, handle, env}
    end
  end

  # Charlists and `:os.getenv/1` directly: this check is most of a hit's
  # cost. A secret's value is kept as a digest.
  defp current?([]), do: true
  defp current?([{var, value} | rest]), do: :os.getenv(var) == value and current?(rest)
  defp current?([{var, :digest, d} | rest]), do: digest(:os.getenv(var)) == d and current?(rest)

  defp snapshot({var, value, false}), do: {var, value}
  defp snapshot({var, value, true}), do: {var, :digest, digest(value)}

  defp digest(false), do: false
  defp digest(value), do: :crypto.hash(:sha256, value)
end
