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
  another test's data.

  ## Which options leave the sandbox

  Options that only shape the call keep it in the test's store:
  `:timeout` and `:durable` (applied to the test's store for that call),
  object options (`:content_type`, `:metadata`, `:range`, `:progress`,
  `:transfer_timeout`, ...), `:page_size` and `:prefix`. Options that pick
  a store leave the sandbox, because the call asks for that store: any
  other storage setting (`:backend`, `:local_path`, `:s3_bucket`,
  `:memory_name`, `:cache_*`, ...) and `storage: handle`.

  `presigned_url/2` works under the sandbox without a server: it signs with
  fixed test credentials for a bucket on an endpoint that does not exist
  (`http://sandbox.micelio.invalid`, bucket `sandbox`; `start/1` takes
  `presign:` settings to change them). The URL has the real shape, so code
  that builds it (a LiveView that presigns) can be tested.

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

  # Settings a call may give without leaving the test's store.
  @call_settings [:timeout, :durable]

  # Not secrets: they sign URLs for an endpoint that does not exist.
  @presign_defaults [
    backend: :s3,
    s3_endpoint: "http://sandbox.micelio.invalid",
    s3_bucket: "sandbox",
    s3_region: "us-east-1",
    s3_access_key_id: "MICELIOSANDBOXKEY",
    s3_secret_access_key: "micelio-sandbox-not-a-secret",
    s3_session_token: nil
  ]

  @doc """
  Starts the sandbox; call it once, in `test/test_helper.exs`.

  ## Options

    * `:backend` - `:memory` (default) or `:local`;
    * `:root` - the base directory of `:local` checkouts (default: the
      system temp dir);
    * `:presign` - S3 settings of the presigning configuration (defaults:
      `s3_endpoint: "http://sandbox.micelio.invalid"`, `s3_bucket:
      "sandbox"`, `s3_region: "us-east-1"` and fixed test credentials);
    * any other storage setting, applied to every checkout (for example
      `memory_max_bytes:`).

      # test/test_helper.exs
      :ok = Micelio.Storage.Sandbox.start(backend: :memory)
  """
  @spec start(keyword()) :: :ok | {:error, term()}
  def start(opts \\ []) do
    {backend, opts} = Keyword.pop(opts, :backend, :memory)
    {root, opts} = Keyword.pop(opts, :root, Path.join(System.tmp_dir!(), "micelio_sandbox"))
    {presign, opts} = Keyword.pop(opts, :presign, [])

    if backend in [:memory, :local] do
      ensure_table()
      :ets.delete(@table, :presign)
      presign = Keyword.merge(@presign_defaults, presign)
      # From now on calls without options find their store here on every
      # call: no handle of the real store is kept for them any more.
      Micelio.Storage.Resolved.forbid_plain(fn ->
        :persistent_term.put(@state, %{backend: backend, root: root, opts: opts, presign: presign})
      end)

      :ok
    else
      {:error, {:invalid_config, :backend, "the sandbox runs on :memory or :local"}}
    end
  end

  @doc "True once `start/1` has run."
  @spec started?() :: boolean()
  def started?, do: :persistent_term.get(@state, nil) != nil

  @doc """
  Gives the calling test process its own empty storage until the test ends:
  one store per store name (`Micelio.Storage`, and each store module), made
  on first use. Returns `:ok`, so it fits `setup`.
  """
  @spec checkout(map() | keyword()) :: :ok | {:error, term()}
  def checkout(_context \\ %{}) do
    case :persistent_term.get(@state, nil) do
      nil ->
        {:error, {:sandbox, :not_started}}

      _state ->
        owner = self()
        :ets.insert(@table, {owner, {:owner, System.unique_integer([:positive])}})
        # ExUnit is there when tests run; `apply` keeps it out of the
        # library's compile-time dependencies.
        apply(ExUnit.Callbacks, :on_exit, [{__MODULE__, owner}, fn -> checkin(owner) end])
        :ok
    end
  end

  @doc """
  Lets `pid` use the storage of `owner_pid` (a test process that checked
  out), for processes the test did not start itself.
  """
  @spec allow(pid(), pid()) :: :ok | {:error, term()}
  def allow(owner_pid, pid) when is_pid(owner_pid) and is_pid(pid) do
    case :ets.lookup(@table, owner_pid) do
      [{_, {:owner, _}}] ->
        # Never replaces what `pid` has (as Ecto's sandbox): a test that
        # checked out keeps its own store, and a process allowed by one
        # test is not handed to another.
        case :ets.lookup(@table, pid) do
          [] ->
            :ets.insert(@table, {pid, {:allowed, owner_pid}})
            :ok

          [{_, {:allowed, ^owner_pid}}] ->
            :ok

          [{_, {:owner, _}}] when pid == owner_pid ->
            :ok

          [{_, {:owner, _}}] ->
            {:error, {:sandbox, :already_checked_out}}

          [{_, {:allowed, _other}}] ->
            {:error, {:sandbox, :already_allowed}}
        end

      [{_, {:allowed, real_owner}}] ->
        allow(real_owner, pid)

      [] ->
        {:error, {:sandbox, :not_checked_out}}
    end
  end

  @doc false
  # For a call with options: the test's store when the sandbox runs and no
  # option picks a store, with the call's `timeout`/`durable` applied;
  # `:off` otherwise (the options then pick the store).
  @spec lookup_with(module(), keyword()) ::
          :off | {:ok, Handle.t()} | {:error, term()}
  def lookup_with(name, opts) do
    with true <- :persistent_term.get(@state, nil) != nil,
         true <- Enum.all?(opts, &match?({key, _} when key in @call_settings, &1)),
         {:ok, call} <- Config.call_settings(opts),
         {:ok, handle} <- lookup(name) do
      {:ok, %{handle | config: Map.merge(handle.config, call)}}
    else
      false -> :off
      {:error, _} = error -> error
    end
  end

  @doc false
  # The handle presigned URLs are signed with under the sandbox, or `:off`.
  @spec presign_handle() :: :off | {:ok, Handle.t()} | {:error, term()}
  def presign_handle do
    case :persistent_term.get(@state, nil) do
      nil ->
        :off

      %{presign: presign} ->
        with {:ok, _} <- lookup() do
          case :ets.lookup(@table, :presign) do
            [{_, handle}] ->
              {:ok, handle}

            [] ->
              with {:ok, handle} <- open_uncached(presign) do
                :ets.insert_new(@table, {:presign, handle})
                {:ok, handle}
              end
          end
        end
    end
  end

  @doc false
  # The store `name` of the calling process's test: `:off` when no sandbox
  # runs.
  @spec lookup(module()) :: :off | {:ok, Handle.t()} | {:error, {:sandbox, :not_checked_out}}
  def lookup(name \\ Micelio.Storage) do
    case :persistent_term.get(@state, nil) do
      nil -> :off
      state -> find([self() | Process.get(:"$callers", [])], name, state)
    end
  end

  defp find([], _name, _state), do: {:error, {:sandbox, :not_checked_out}}

  defp find([pid | rest], name, state) when is_pid(pid) do
    case :ets.lookup(@table, pid) do
      [{_, {:owner, id}}] -> store(pid, id, name, state)
      [{_, {:allowed, owner}}] -> find([owner], name, state)
      [] -> find(rest, name, state)
    end
  end

  defp find([_registered_name | rest], name, state), do: find(rest, name, state)

  # The test's store for `name`, made on first use (two processes of one
  # test racing to make it agree on the first one inserted).
  defp store(owner, id, name, state) do
    case :ets.lookup(@table, {:store, owner, name}) do
      [{_, handle}] ->
        {:ok, handle}

      [] ->
        with {:ok, handle} <- open_store(state, id, name) do
          :ets.insert_new(@table, {{:store, owner, name}, handle})
          [{_, handle}] = :ets.lookup(@table, {:store, owner, name})
          {:ok, handle}
        end
    end
  end

  defp checkin(owner) do
    case :ets.lookup(@table, owner) do
      [{_, {:owner, id}}] ->
        :ets.match_delete(@table, {:_, {:allowed, owner}})
        :ets.match_delete(@table, {{:store, owner, :_}, :_})
        :ets.delete(@table, owner)
        %{backend: backend, root: root} = :persistent_term.get(@state)
        if backend == :local, do: File.rm_rf(Path.join(root, "checkout-#{id}"))
        :ok

      _ ->
        :ok
    end
  end

  defp open_store(%{backend: :memory, opts: opts}, id, name) do
    name = "sandbox-#{id}-#{inspect(name)}"
    open_uncached(Keyword.merge(opts, backend: :memory, memory_name: name))
  end

  defp open_store(%{backend: :local, root: root, opts: opts}, id, name) do
    dir = Path.join([root, "checkout-#{id}", inspect(name)])
    File.mkdir_p!(dir)
    open_uncached(Keyword.merge(opts, backend: :local, local_path: dir))
  end

  # Settings are given in full, never taken from the app config; the store
  # is not kept in the store cache, so it is freed when the test ends.
  defp open_uncached(opts) do
    with {:ok, config, _env} <- Config.resolve_tracked(opts, []),
         do: Store.open(config, cache: false)
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
