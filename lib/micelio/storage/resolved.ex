defmodule Micelio.Storage.Resolved do
  @moduledoc false
  # Keyword options already resolved to an open store (a handle).
  #
  # Resolving reads about twenty settings through the options, the app
  # config and the environment (about 11 µs, more than a local read of a
  # small file). A remembered resolution is used while the app config is
  # the one it saw and while the environment variables it read hold the
  # values it saw:
  #
  #   * the app config is checked on every call, without being read: see
  #     `app_generation/0`. `Application.put_env/3` takes effect on the
  #     next call;
  #   * environment variables are checked at most every `@env_check_ms`
  #     (re-reading twenty variables was most of a cache hit's cost), by
  #     `Micelio.Storage.Resolved.Watch` (a tick every `@env_check_ms`), or
  #     on the next call after `Micelio.Storage.reload/0`.
  #
  # The app config is compared by its fingerprint (two 32-bit hashes of
  # the term), which gives its generation. The fingerprint, not the
  # config: persistent terms are written to crash dumps (`=literals`), and
  # the config may hold a secret. Calls without options (the documented
  # `Micelio.Storage.get(key)`) keep their handle in the same persistent
  # term as the generation, so a hit reads one persistent term; calls with
  # options find theirs in an ETS table under `{opts, generation}` (and
  # keep their last one in the process), or under a digest when the
  # options hold a secret. Neither the persistent term nor the table holds
  # a secret (a secret variable is kept as its digest, the app config as
  # its fingerprint), so they can be dumped (observer, crash dumps) without
  # leaking credentials.

  alias Micelio.Storage.{Config, Settings, Store}

  @table __MODULE__
  @max_entries 1024
  # {fingerprint of Config.raw_app_env(), generation, application
  #  controller, state, plain, epoch}, where state is an atomics array:
  #    1. the controller's reduction count when the config was last read;
  #  plain is nil or {handle, env snapshot} for calls without options (the
  #  watch sets it to nil when a variable it read changes), and
  #  epoch is the env check's clock (below), or nil without the watch.
  # An atom: a persistent term under an atom is found in a third of the
  # time of one under a tuple, which counts on the path of every RAM hit.
  @app :micelio_storage_resolved_app
  # In the calling process, {generation, count}: the controller's count at
  # which that process last saw the config of that generation validated.
  # A process dictionary read costs a few ns; the shared atomics, 20.
  @seen :micelio_storage_resolved_seen
  # The env check's clock: an atomics array whose one counter the watch
  # moves every @env_check_ms.
  @epoch {__MODULE__, :epoch}
  # The calling process's last options: {{opts, generation}, handle, the
  # env check's clock when they were checked}
  @last {__MODULE__, :last}
  # True once the sandbox has started (`forbid_plain/1`).
  @no_plain {__MODULE__, :no_plain}
  # Taken by the sandbox's start and by keeping a plain handle.
  @lock {__MODULE__, :plain}
  @env_check_ms 250
  @secrets Settings.secrets()

  @doc "How long, in ms, environment variables may go unchecked."
  def env_check_ms, do: @env_check_ms

  @doc """
  Forgets every remembered resolution: the next call of each configuration
  resolves again, reading the environment anew.
  """
  def reset do
    :persistent_term.erase(@app)

    try do
      :ets.delete_all_objects(@table)
    rescue
      ArgumentError -> true
    end

    :ok
  end

  ## The app config's generation

  # A number that changes whenever the default app config does.
  # Remembered resolutions are keyed by it, so a change makes them
  # unreachable at once without keeping the config in the table.
  #
  # The config is not read on every call. It only changes through the
  # application controller (`Application.put_env/3`, `delete_env`, loading
  # an app: each is a call to that process), so while the controller's
  # reduction count is the one seen when the config was last read, the
  # config is still the one read. Reading the count costs about a fifth of
  # reading the two apps' config and hashing it. The count is read before
  # the config, so a change racing a read shows as a new count next time;
  # a count that moved for another reason only costs one read.
  defp app_generation do
    case :persistent_term.get(@app, nil) do
      {_print, generation, controller, state, _plain, _epoch} = app ->
        if :atomics.get(state, 1) == controller_count(controller),
          do: generation,
          else: recheck(app)

      nil ->
        recheck(nil)
    end
  end

  defp recheck(app) do
    controller = Process.whereis(:application_controller)
    count = controller_count(controller)
    print = fingerprint(Config.raw_app_env())

    case app do
      {^print, generation, ^controller, state, _plain, _epoch} ->
        :atomics.put(state, 1, count)
        generation

      _ ->
        new_generation(print, controller, count)
    end
  end

  defp new_generation(print, controller, count) do
    # Unique in the VM, so two racing configs never share a number.
    generation = :erlang.unique_integer([:positive])
    state = :atomics.new(1, signed: true)
    :atomics.put(state, 1, count)
    epoch = :persistent_term.get(@epoch, nil)
    :persistent_term.put(@app, {print, generation, controller, state, nil, epoch})
    generation
  end

  # -1 (never a count) without a controller: every call reads the config.
  # Inlined: it is on the path of every RAM hit.
  @compile {:inline, controller_count: 1}
  defp controller_count(pid) when is_pid(pid) do
    case :erlang.process_info(pid, :reductions) do
      {:reductions, count} -> count
      nil -> -1
    end
  end

  defp controller_count(_), do: -1

  # 64 bits: two configs that differ collide once in 2^64 changes.
  defp fingerprint(raw),
    do: {:erlang.phash2(raw, 4_294_967_296), :erlang.phash2({:salt, raw}, 4_294_967_296)}

  ## Calls without options

  @doc """
  The fast path of calls without options: the handle while the
  remembered one holds, else `:miss`. One persistent term, one atomic
  and the controller's count: no clock, no variable, no sandbox lookup (no
  handle is kept once the sandbox has started, see `forbid_plain/1`).
  """
  def plain_hit do
    case :persistent_term.get(@app, nil) do
      {_print, generation, controller, state, {handle, _env}, _epoch} ->
        if validated?(generation, controller, state), do: handle, else: :miss

      _ ->
        :miss
    end
  end

  # True while the config of `generation` is still the app config: the
  # controller's count is one this process saw validated, or the one the
  # config was last read at by any process (the controller may have worked
  # since on something else, or on our own persistent terms: replacing one
  # costs it a GC).
  @compile {:inline, validated?: 3}
  defp validated?(generation, controller, state) do
    count = controller_count(controller)

    case Process.get(@seen) do
      {^generation, ^count} ->
        true

      _ ->
        if count == :atomics.get(state, 1) do
          Process.put(@seen, {generation, count})
          true
        else
          false
        end
    end
  end

  @doc "`{:ok, handle}` for a call without options, under the app config."
  def fetch_plain do
    case plain_hit() do
      :miss -> fetch_plain_again()
      handle -> {:ok, handle}
    end
  end

  defp fetch_plain_again do
    generation = app_generation()

    case :persistent_term.get(@app, nil) do
      {_print, ^generation, _controller, _state, {handle, _env}, _epoch} -> {:ok, handle}
      _ -> remember_plain(generation)
    end
  end

  # Kept only while the watch runs (it is what notices a changed
  # environment variable: without it, as in a script calling before the
  # application started, every call resolves), and never once the sandbox
  # has started: under the lock `forbid_plain/1` takes, so a handle kept
  # by a call racing the sandbox's start is dropped by that start.
  defp remember_plain(generation) do
    with {:ok, handle, env} <- resolve_now([], Config.app_env()) do
      :global.trans(@lock, fn -> keep_plain(generation, handle, env) end, [node()])
      {:ok, handle}
    end
  end

  defp keep_plain(generation, handle, env) do
    with {print, ^generation, controller, state, _, epoch} <- :persistent_term.get(@app, nil),
         false <- :persistent_term.get(@no_plain, false),
         pid when is_pid(pid) <- Process.whereis(Micelio.Storage.Resolved.Watch) do
      plain = {handle, Enum.map(env, &snapshot/1)}
      :persistent_term.put(@app, {print, generation, controller, state, plain, epoch})
    end
  end

  @doc """
  Runs `fun` (the sandbox starting), after which calls without options no
  longer keep a handle: they find their store through the sandbox on
  every call.
  """
  def forbid_plain(fun) do
    :global.trans(
      @lock,
      fn ->
        :persistent_term.put(@no_plain, true)
        result = fun.()
        reset()
        result
      end,
      [node()]
    )
  end

  @doc false
  # The watch's tick: moves the env check's clock, and marks the plain
  # handle stale when a variable it read has changed.
  def tick do
    case :persistent_term.get(@epoch, nil) do
      nil -> :ok
      epoch -> :atomics.add(epoch, 1, 1)
    end

    case :persistent_term.get(@app, nil) do
      {_print, _generation, _controller, _state, {_handle, env} = plain, _epoch} ->
        unless current?(env), do: :global.trans(@lock, fn -> drop_plain(plain) end, [node()])

      _ ->
        :ok
    end

    :ok
  end

  # Under the lock, so no handle kept meanwhile is lost: only this one goes.
  defp drop_plain(plain) do
    case :persistent_term.get(@app, nil) do
      {print, generation, controller, state, ^plain, epoch} ->
        :persistent_term.put(@app, {print, generation, controller, state, nil, epoch})

      _ ->
        :ok
    end
  end

  @doc false
  # Made once by the watch: the clock `tick/0` moves.
  def create_epoch do
    if :persistent_term.get(@epoch, nil) == nil do
      :persistent_term.put(@epoch, :atomics.new(1, signed: true))
      # Resolutions remembered before the clock existed take it up.
      reset()
    end

    :ok
  end

  ## Calls with options

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
      key = {opts, app_generation()}

      case Process.get(@last) do
        {^key, handle, seen} when seen >= 0 ->
          if seen == epoch_now(), do: {:ok, handle}, else: fetch_shared(key, opts)

        _ ->
          fetch_shared(key, opts)
      end
    end
  end

  def fetch(opts), do: fetch(opts, Config.app_env())

  @doc """
  `{:ok, handle}` when `opts` are the calling process's last options and
  still hold (same app config, env check not due), else `:miss`. No
  table, no copy: the fast path of calls with options.
  """
  def remembered(opts) do
    with {{^opts, generation}, handle, seen} when seen >= 0 <- Process.get(@last),
         {_print, ^generation, controller, state, _plain, epoch} when epoch != nil <-
           :persistent_term.get(@app, nil),
         true <- :atomics.get(epoch, 1) == seen,
         true <- validated?(generation, controller, state) do
      {:ok, handle}
    else
      _ -> :miss
    end
  end

  @doc """
  `{:ok, handle}` for `opts` under the application config `app` (a named
  store's, or `Config.app_env/0`), from the table or resolved now.
  """
  def fetch(opts, app) do
    digest = :crypto.hash(:sha256, :erlang.term_to_binary({opts, app}))

    case lookup(digest, fn -> resolve_now(opts, app) end) do
      {:ok, handle, _checked} -> {:ok, handle}
      other -> other
    end
  end

  # The table's resolution of `opts`, remembered in the calling process
  # too: the last options of each process are found again without copying
  # their handle out of the table (most of a hit's cost), and only while
  # their env check is not due (the clock's value they were checked at is
  # kept; -1, without the watch's clock, is never taken as checked).
  # Options with a secret are never kept there.
  defp fetch_shared(key, opts) do
    case lookup(key, fn -> resolve_now(opts, Config.app_env()) end) do
      {:ok, handle, checked} ->
        Process.put(@last, {key, handle, :atomics.get(checked, 1)})
        {:ok, handle}

      other ->
        other
    end
  end

  defp secret_option?([{name, _} | rest]), do: name in @secrets or secret_option?(rest)

  defp secret_option?(_), do: false

  # Only the handle and its check's state are copied out on a hit (not
  # the key, which holds the options); the variables to re-read (a row of
  # their own) only when the check is due. `{:ok, handle, checked}`, or
  # `{:ok, handle}` without the table.
  defp lookup(key, resolve) do
    {handle, checked} = :ets.lookup_element(@table, key, 2)

    if checked?(checked) or recheck_env(checked, :ets.lookup_element(@table, {:env, key}, 2)),
      do: {:ok, handle, checked},
      else: remember(key, resolve)
  rescue
    ArgumentError ->
      if :ets.whereis(@table) == :undefined do
        # The application is not started (a script calling in early): no table.
        with {:ok, handle, _env} <- resolve.(), do: {:ok, handle}
      else
        remember(key, resolve)
      end
  end

  # The environment values stored are the ones the resolution read, so a
  # change racing it is seen by the next call's check.
  defp remember(key, resolve) do
    with {:ok, handle, env} <- resolve.() do
      if :ets.info(@table, :size) >= 2 * @max_entries, do: :ets.delete_all_objects(@table)
      checked = :atomics.new(1, signed: true)
      :atomics.put(checked, 1, epoch_now())
      :ets.insert(@table, [{{:env, key}, Enum.map(env, &snapshot/1)}, {key, {handle, checked}}])
      {:ok, handle, checked}
    end
  end

  ## The env check of calls with options

  # `checked` holds the clock's value when the variables were last found
  # unchanged; the check is due once the clock has moved (at most every
  # @env_check_ms). Without the watch's clock, it is always due.
  defp checked?(checked) do
    case :persistent_term.get(@epoch, nil) do
      nil -> false
      epoch -> :atomics.get(checked, 1) == :atomics.get(epoch, 1)
    end
  end

  defp recheck_env(checked, env) do
    now = epoch_now()

    if current?(env) do
      :atomics.put(checked, 1, now)
      true
    else
      false
    end
  end

  defp epoch_now do
    case :persistent_term.get(@epoch, nil) do
      nil -> -1
      epoch -> :atomics.get(epoch, 1)
    end
  end

  defp resolve_now(opts, app) do
    with {:ok, config, env} <- Config.resolve_tracked(opts, app),
         {:ok, handle} <- Store.open(config) do
      {:ok, handle, env}
    end
  end

  # Charlists and `:os.getenv/1` directly: this check is most of a
  # recheck's cost. A secret's value is kept as a digest.
  defp current?([]), do: true
  defp current?([{var, value} | rest]), do: :os.getenv(var) == value and current?(rest)
  defp current?([{var, :digest, d} | rest]), do: digest(:os.getenv(var)) == d and current?(rest)

  defp snapshot({var, value, false}), do: {var, value}
  defp snapshot({var, value, true}), do: {var, :digest, digest(value)}

  defp digest(false), do: false
  defp digest(value), do: :crypto.hash(:sha256, value)
end
