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
  # The app config is compared by its fingerprint (two 32-bit hashes of
  # the term) with the one in a persistent term, which gives its
  # generation. The fingerprint, not the config: persistent terms are
  # written to crash dumps (`=literals`), and the config may hold a secret. Calls without options (the documented
  # `Micelio.Storage.get(key)`) keep their handle in a persistent term of
  # that generation; calls with options find theirs in an ETS table under
  # `{opts, generation}`, or under a digest when the options hold a secret.
  # Neither the persistent terms nor this module's ETS table hold a secret
  # (a secret variable is kept as its digest, the app config as its
  # fingerprint), so they can be dumped (observer, crash dumps) without
  # leaking credentials.
  #
  # Reading the app config of the two apps is most of what a remembered
  # call costs (about 0.4 µs, measured in bench/fast_paths.exs), but it is
  # what makes `Application.put_env/3` take effect on the next call.

  alias Micelio.Storage.{Config, Settings, Store}

  @table __MODULE__
  @max_entries 1024
  # {fingerprint of Config.raw_app_env(), generation}
  @app {__MODULE__, :app}
  # {generation, handle, env snapshot, next check}
  @plain {__MODULE__, :plain}
  @env_check_ms 250
  # The same in native time units: the clock is read raw on every call.
  @env_check System.convert_time_unit(@env_check_ms, :millisecond, :native)
  @secrets Settings.secrets()

  @doc "How long, in ms, environment variables may go unchecked."
  def env_check_ms, do: @env_check_ms

  @doc """
  Forgets every remembered resolution: the next call of each configuration
  resolves again, reading the environment anew.
  """
  def reset do
    :persistent_term.erase(@plain)
    :persistent_term.erase(@app)

    try do
      :ets.delete_all_objects(@table)
    rescue
      ArgumentError -> true
    end

    :ok
  end

  # The default app config, read on every call, and its generation: a
  # number that changes whenever the config does. Remembered resolutions
  # are keyed by it, so a change makes them unreachable at once without
  # keeping the config (which may hold secrets) in the table.
  defp app_generation do
    raw = Config.raw_app_env()
    print = fingerprint(raw)

    case :persistent_term.get(@app, nil) do
      {^print, generation} ->
        {generation, raw}

      _ ->
        # Unique in the VM, so two racing configs never share a number.
        generation = :erlang.unique_integer([:positive])
        :persistent_term.put(@app, {print, generation})
        {generation, raw}
    end
  end

  # 64 bits: two configs that differ collide once in 2^64 changes.
  defp fingerprint(raw),
    do: {:erlang.phash2(raw, 4_294_967_296), :erlang.phash2({:salt, raw}, 4_294_967_296)}

  @doc "`{:ok, handle}` for a call without options, under the app config."
  def fetch_plain do
    {generation, raw} = app_generation()

    case :persistent_term.get(@plain, nil) do
      {^generation, handle, env, next_check} ->
        if fresh?(next_check, env), do: {:ok, handle}, else: remember_plain(generation, raw)

      _ ->
        remember_plain(generation, raw)
    end
  end

  defp remember_plain(generation, raw) do
    with {:ok, handle, env} <- resolve_now([], Config.app_env(raw)) do
      :persistent_term.put(@plain, {generation, handle, Enum.map(env, &snapshot/1), check()})
      {:ok, handle}
    end
  end

  defp check do
    next_check = :atomics.new(1, signed: true)
    :atomics.put(next_check, 1, deadline())
    next_check
  end

  # True while the env check is not due, or when it is due and passes (the
  # next one is then pushed back).
  defp fresh?(next_check, env) do
    now = :erlang.monotonic_time()

    cond do
      now < :atomics.get(next_check, 1) ->
        true

      current?(env) ->
        :atomics.put(next_check, 1, now + @env_check)
        true

      true ->
        false
    end
  end

  defp deadline, do: :erlang.monotonic_time() + @env_check

  @doc "Creates the table; its owner is the `Micelio.Storage.Stores` server."
  def create_table do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
  end

  @doc """
  `{:ok, handle}` for `opts` under the default app config, from the table
  or resolved now.
  """
  def fetch(opts) when is_list(opts) do
    if secret_option?(opts) do
      fetch(opts, Config.app_env())
    else
      # Options without secrets are their own key, beside the generation of
      # the app config: no digest to compute.
      {generation, raw} = app_generation()
      lookup({opts, generation}, fn -> resolve_now(opts, Config.app_env(raw)) end)
    end
  end

  def fetch(opts), do: fetch(opts, Config.app_env())

  @doc """
  `{:ok, handle}` for `opts` under the application config `app` (a named
  store's, or `Config.app_env/0`), from the table or resolved now.
  """
  def fetch(opts, app) do
    digest = :crypto.hash(:sha256, :erlang.term_to_binary({opts, app}))
    lookup(digest, fn -> resolve_now(opts, app) end)
  end

  defp secret_option?([{name, _} | rest]), do: name in @secrets or secret_option?(rest)

  defp secret_option?(_), do: false

  # Only the handle and the check's deadline are copied out on a hit; the
  # variables to re-read (a row of their own) only when the check is due.
  defp lookup(key, resolve) do
    case :ets.lookup(@table, key) do
      [{_, handle, next_check}] ->
        if :erlang.monotonic_time() < :atomics.get(next_check, 1) or
             fresh?(next_check, :ets.lookup_element(@table, {:env, key}, 2)),
           do: {:ok, handle},
           else: remember(key, resolve)

      [] ->
        remember(key, resolve)
    end
  rescue
    # The application is not started (a script calling in early): no table.
    ArgumentError ->
      with {:ok, handle, _env} <- resolve.(), do: {:ok, handle}
  end

  # The environment values stored are the ones the resolution read, so a
  # change racing it is seen by the next call's check.
  defp remember(key, resolve) do
    with {:ok, handle, env} <- resolve.() do
      if :ets.info(@table, :size) >= 2 * @max_entries, do: :ets.delete_all_objects(@table)
      :ets.insert(@table, [{{:env, key}, Enum.map(env, &snapshot/1)}, {key, handle, check()}])
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
