defmodule Micelio.Storage.Sandbox do
  @moduledoc """
  Isolated storage per test, for `async: true` ExUnit suites, with no
  options to thread through the app's code.

  Once the sandbox is started, every call to `Micelio.Storage` (or to a
  named store defined with `use Micelio.Storage`) made *without options*
  goes to the store of the test that owns the calling process: objects one
  test writes are invisible to every other test, even when they use the
  same keys. Ownership follows the test process, the processes it
  `allow/2`s, and the Tasks it starts (through `$callers`), as Ecto's SQL
  sandbox does. A process that belongs to no test gets
  `{:error, {:sandbox, :not_checked_out}}` (bang functions raise), never
  another test's data. Calls that pass explicit options are not sandboxed.

  ## Recipe

      # test/test_helper.exs
      Micelio.Storage.Sandbox.start(backend: :memory)   # or backend: :local
      ExUnit.start()

      # in each test module
      setup context, do: Micelio.Storage.Sandbox.checkout(context)
      # Elixir 1.15+: setup {Micelio.Storage.Sandbox, :checkout}

      # a process the test did not start itself
      Micelio.Storage.Sandbox.allow(self(), pid)

  With `backend: :memory` each checkout is a fresh, empty memory store;
  with `backend: :local` a fresh directory under the system temp dir
  (`root:` picks another base), removed when the test ends.
  """

  alias Micelio.Storage.{Config, Handle, Store}

  @table __MODULE__
  @state {__MODULE__, :config}

  @doc """
  Starts the sandbox; call it once, in `test/test_helper.exs`.

  ## Options

    * `:backend` - `:memory` (default) or `:local`;
    * `:root` - the base directory of `:local` checkouts (default: the
      system temp dir);
    * any other storage setting, applied to every checkout (for example
      `memory_max_bytes:`).

      iex> Micelio.Storage.Sandbox.start(backend: :memory)
      :ok
  """
  @spec start(keyword()) :: :ok | {:error, term()}
  def start(opts \\ []) do
    {backend, opts} = Keyword.pop(opts, :backend, :memory)
    {root, opts} = Keyword.pop(opts, :root, Path.join(System.tmp_dir!(), "micelio_sandbox"))

    if backend in [:memory, :local] do
      ensure_table()
      :persistent_term.put(@state, %{backend: backend, root: root, opts: opts})
      :ok
    else
      {:error, {:invalid_config, :backend, "the sandbox runs on :memory or :local"}}
    end
  end

  @doc "True once `start/1` has run."
  @spec started?() :: boolean()
  def started?, do: :persistent_term.get(@state, nil) != nil

  @doc """
  Gives the calling test process its own empty store until the test ends.
  Returns `{:ok, storage: handle}`, so it fits `setup`; the handle is the
  test's store, for calls that want it explicitly.
  """
  @spec checkout(map() | keyword()) :: {:ok, keyword()} | {:error, term()}
  def checkout(_context \\ %{}) do
    case :persistent_term.get(@state, nil) do
      nil ->
        {:error, {:sandbox, :not_started}}

      state ->
        owner = self()

        with {:ok, handle, cleanup} <- open_store(state) do
          :ets.insert(@table, {owner, {:owner, handle, cleanup}})
          # ExUnit is there when tests run; `apply` keeps it out of the
          # library's compile-time dependencies.
          apply(ExUnit.Callbacks, :on_exit, [{__MODULE__, owner}, fn -> checkin(owner) end])
          {:ok, storage: handle}
        end
    end
  end

  @doc """
  Lets `pid` use the store of `owner_pid` (a test process that checked
  out), for processes the test did not start itself.
  """
  @spec allow(pid(), pid()) :: :ok | {:error, term()}
  def allow(owner_pid, pid) when is_pid(owner_pid) and is_pid(pid) do
    case :ets.lookup(@table, owner_pid) do
      [{_, {:owner, _, _}}] ->
        :ets.insert(@table, {pid, {:allowed, owner_pid}})
        :ok

      [{_, {:allowed, real_owner}}] ->
        allow(real_owner, pid)

      [] ->
        {:error, {:sandbox, :not_checked_out}}
    end
  end

  @doc false
  # The store of the calling process: `:off` when no sandbox runs.
  @spec lookup() :: :off | {:ok, Handle.t()} | {:error, {:sandbox, :not_checked_out}}
  def lookup do
    case :persistent_term.get(@state, nil) do
      nil -> :off
      _state -> find([self() | Process.get(:"$callers", [])])
    end
  end

  defp find([]), do: {:error, {:sandbox, :not_checked_out}}

  defp find([pid | rest]) when is_pid(pid) do
    case :ets.lookup(@table, pid) do
      [{_, {:owner, handle, _}}] -> {:ok, handle}
      [{_, {:allowed, owner}}] -> find([owner])
      [] -> find(rest)
    end
  end

  defp find([_name | rest]), do: find(rest)

  defp checkin(owner) do
    case :ets.lookup(@table, owner) do
      [{_, {:owner, _handle, cleanup}}] ->
        :ets.match_delete(@table, {:_, {:allowed, owner}})
        :ets.delete(@table, owner)
        cleanup.()

      _ ->
        :ok
    end
  end

  defp open_store(%{backend: :memory, opts: opts}) do
    name = "sandbox-#{System.unique_integer([:positive])}"
    open_uncached(Keyword.merge(opts, backend: :memory, memory_name: name), fn -> :ok end)
  end

  defp open_store(%{backend: :local, root: root, opts: opts}) do
    dir = Path.join(root, "checkout-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)

    open_uncached(Keyword.merge(opts, backend: :local, local_path: dir), fn -> File.rm_rf(dir) end)
  end

  # Settings are given in full, never taken from the app config; the store
  # is not kept in the store cache, so it is freed when the test ends.
  defp open_uncached(opts, cleanup) do
    with {:ok, config, _env} <- Config.resolve_tracked(opts, []),
         {:ok, handle} <- Store.open(config, cache: false) do
      {:ok, handle, cleanup}
    end
  end

  # The table outlives any one test: an unlinked process owns it.
  defp ensure_table do
    if :ets.whereis(@table) == :undefined do
      parent = self()

      spawn(fn ->
        :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
        send(parent, {@table, :ready})
        Process.sleep(:infinity)
      end)

      receive do
        {@table, :ready} -> :ok
      after
        5_000 -> raise "Micelio.Storage.Sandbox could not create its table"
      end
    end
  end
end
