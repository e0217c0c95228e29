defmodule Micelio.Storage.Lookup do
  @moduledoc false
  # The one way a call finds its store: a handle as given, the sandbox's
  # store for calls it isolates, else the resolved (cached) configuration.

  alias Micelio.Storage.{Handle, Resolved, Sandbox}

  @doc false
  # The handle of a call's options: a `%Handle{}`, `[]` (the app config,
  # or the test's store under the sandbox), or storage options.
  @spec handle(Handle.t() | keyword() | term()) :: {:ok, Handle.t()} | {:error, term()}
  def handle(%Handle{} = handle), do: {:ok, handle}

  # Calls without options are the ones a sandbox isolates. A handle kept
  # for them exists only while no sandbox has started.
  def handle([]) do
    case Resolved.plain_hit() do
      :miss ->
        case Sandbox.lookup() do
          :off -> Resolved.fetch_plain()
          sandboxed -> sandboxed
        end

      handle ->
        {:ok, handle}
    end
  end

  # A handle given as `storage:` (named stores pass one beside per-call
  # options) is used as is.
  def handle(opts) when is_list(opts) do
    with :ok <- Micelio.Storage.Config.check_proper(opts), do: resolve_proper(opts)
  end

  def handle(opts), do: Resolved.fetch(opts)

  @doc false
  # The fast path of calls with options: the calling process's last
  # resolution of these very options, while they still hold. Never under
  # the sandbox, whose stores depend on the calling process.
  @spec remembered(keyword()) :: {:ok, Handle.t()} | :miss
  def remembered(opts) do
    if Sandbox.started?(), do: :miss, else: Resolved.remembered(opts)
  end

  defp resolve_proper(opts) do
    case Keyword.pop(opts, :storage) do
      {nil, opts} -> sandboxed_or_resolved(Micelio.Storage, opts)
      {%Handle{} = handle, []} -> {:ok, handle}
      {other, rest} -> storage([storage: other], rest)
    end
  end

  # Under the sandbox, options that only shape the call (timeout, durable)
  # keep it in the test's store; any other setting picks a store.
  defp sandboxed_or_resolved(name, opts) do
    case Sandbox.lookup_with(name, opts) do
      :off -> Resolved.fetch(opts)
      sandboxed -> sandboxed
    end
  end

  @doc false
  # The storage side of a call: a handle given as `storage:`, or the rest
  # of the options.
  def storage(object, opts) do
    case Keyword.fetch(object, :storage) do
      :error ->
        {:ok, opts}

      {:ok, %Handle{} = handle} when opts == [] ->
        {:ok, handle}

      {:ok, %Handle{}} ->
        {:error, {:invalid_config, :storage, "a handle takes no other storage options"}}

      {:ok, other} ->
        {:error,
         {:invalid_config, :storage,
          "expected a handle, got #{Micelio.Storage.Config.shape(other)}"}}
    end
  end

  @doc false
  # The handle a presigned URL of store `name` is signed with: under the
  # sandbox, its presigning configuration (no server needed) unless the
  # options pick a store.
  def presign_handle(name, storage_opts, resolve) do
    only_call_settings? =
      Enum.all?(storage_opts, &match?({key, _} when key in [:timeout, :durable], &1))

    case only_call_settings? and Sandbox.presign_handle() do
      {:ok, handle} -> {:ok, %{handle | name: name}}
      {:error, _} = error -> error
      _off -> resolve.(storage_opts)
    end
  end

  @doc false
  # The handle of a store named as integrations take it (the plug, the
  # LiveView helpers): a store module (`use Micelio.Storage`) or storage
  # options.
  def store(module) when is_atom(module), do: Micelio.Storage.NamedStore.handle(module, [])
  def store(opts), do: Micelio.Storage.open(opts)
end
