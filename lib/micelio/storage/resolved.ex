defmodule Micelio.Storage.Resolved do
  @moduledoc false
  # Keyword options already resolved to an open store (a handle).
  #
  # Resolving reads about twenty settings through the options, the app
  # config and the environment (about 11 µs, more than a local read of a
  # small file). A remembered resolution is used while the app config is
  # the one it saw (checked on every call, so `Application.put_env/3` takes
  # effect on the next call) and while the environment variables it read
  # hold the values it saw. Those are re-read at most every
  # `@env_check_ms` (re-reading twenty variables was most of a cache hit's
  # cost), or on the next call after `Micelio.Storage.reload/0`.
  #
  # Calls without options (the documented `Micelio.Storage.get(key)`) skip
  # even the digest: their resolution is kept in a persistent term beside
  # the app config it was made under, compared in place. That term holds
  # the app config, secrets included, as the application controller's own
  # table already does; this module's ETS table still holds none.
  #
  # Keys are digests and values hold no secret (a secret variable is kept as
  # its digest): the table can be dumped (observer, crash dumps) without
  # leaking credentials.

  alias Micelio.Storage.{Config, Store}

  @table __MODULE__
  @max_entries 1024
  @plain {__MODULE__, :plain}
  @env_check_ms 250

  @doc "How long, in ms, environment variables may go unchecked."
  def env_check_ms, do: @env_check_ms

  @doc """
  Forgets every remembered resolution: the next call of each configuration
  resolves again, reading the environment anew.
  """
  def reset do
    :persistent_term.erase(@plain)

    try do
      :ets.delete_all_objects(@table)
    rescue
      ArgumentError -> true
    end

    :ok
  end

  @doc "`{:ok, handle}` for a call without options, under the app config."
  def fetch_plain do
    app = Config.app_env()

    case :persistent_term.get(@plain, nil) do
      {^app, handle, env, next_check} ->
        if fresh?(next_check, env), do: {:ok, handle}, else: remember_plain(app)

      _ ->
        remember_plain(app)
    end
  end

  defp remember_plain(app) do
    with {:ok, handle, env} <- resolve_now([], app) do
      next_check = :atomics.new(1, signed: true)
      :atomics.put(next_check, 1, deadline())
      :persistent_term.put(@plain, {app, handle, Enum.map(env, &snapshot/1), next_check})
      {:ok, handle}
    end
  end

  # True while the env check is not due, or when it is due and passes (the
  # next one is then pushed back).
  defp fresh?(next_check, env) do
    now = System.monotonic_time(:millisecond)

    cond do
      now < :atomics.get(next_check, 1) ->
        true

      current?(env) ->
        :atomics.put(next_check, 1, now + @env_check_ms)
        true

      true ->
        false
    end
  end

  defp deadline, do: System.monotonic_time(:millisecond) + @env_check_ms

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

    # Only the check's deadline and the handle are copied out on a hit; the
    # variables to re-read only when the check is due.
    case element(digest, 4) do
      nil ->
        remember(digest, opts, app)

      next_check ->
        if System.monotonic_time(:millisecond) < :atomics.get(next_check, 1) or
             fresh?(next_check, :ets.lookup_element(@table, digest, 2)),
           do: {:ok, :ets.lookup_element(@table, digest, 3)},
           else: remember(digest, opts, app)
    end
  rescue
    # The application is not started (a script calling in early): no table.
    ArgumentError ->
      with {:ok, handle, _env} <- resolve_now(opts, app), do: {:ok, handle}
  end

  # One field of an entry, `nil` when there is none (OTP 25 has no
  # lookup_element/4).
  defp element(digest, pos) do
    :ets.lookup_element(@table, digest, pos)
  rescue
    ArgumentError -> nil
  end

  # The environment values stored are the ones the resolution read, so a
  # change racing it is seen by the next call's check.
  defp remember(digest, opts, app) do
    with {:ok, handle, env} <- resolve_now(opts, app) do
      if :ets.info(@table, :size) >= @max_entries, do: :ets.delete_all_objects(@table)
      next_check = :atomics.new(1, signed: true)
      :atomics.put(next_check, 1, deadline())
      :ets.insert(@table, {digest, Enum.map(env, &snapshot/1), handle, next_check})
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
