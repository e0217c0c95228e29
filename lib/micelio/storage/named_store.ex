defmodule Micelio.Storage.NamedStore do
  @moduledoc """
  The behaviour and plumbing of store modules defined with
  `use Micelio.Storage, otp_app: :my_app` (see `Micelio.Storage`).

  A store module reads `config :my_app, MyApp.Storage, ...` (never the
  `:micelio` config), may adjust it at runtime in `c:init/2`, and is started
  in the app's supervision tree with `{MyApp.Storage, []}`: the store (its
  connection pool and caches) is built at boot, and a bad setting stops
  the boot with `{:invalid_config, setting, message}`. A store module that is
  not started still works: it resolves its config on each call.
  """

  use GenServer

  alias Micelio.Storage.{Config, Handle, Resolved, Sandbox, Settings, Store}

  @secrets Settings.secrets()

  @doc """
  Adjusts the configuration when the store starts (`:supervisor`, with the
  start options merged in) and when it resolves on a call without being
  started (`:runtime`). Returns `{:ok, config}`, or `:ignore` to not start.

      def init(_context, config) do
        {:ok, Keyword.put(config, :s3_bucket, System.fetch_env!("ARTIFACTS_BUCKET"))}
      end
  """
  @callback init(context :: :supervisor | :runtime, config :: keyword()) ::
              {:ok, keyword()} | :ignore

  @doc "The child spec of `module` with start options `opts`."
  @spec child_spec(module(), keyword()) :: Supervisor.child_spec()
  def child_spec(module, opts) do
    %{id: module, start: {__MODULE__, :start_link, [module, seal(opts)]}, type: :worker}
  end

  @doc "Builds the store of `module` and keeps it for every call."
  @spec start_link(module(), keyword()) :: GenServer.on_start()
  def start_link(module, opts),
    do: GenServer.start_link(__MODULE__, {module, seal(opts)}, name: module)

  # A child spec's start arguments reach every :logger handler in the
  # supervisor's progress and start-error reports, and Logger prints them
  # with `handle_sasl_reports: true`. Secret settings ride there sealed in a
  # closure: reports print a fun as `#Fun<...>`, never what it closes over.
  # `config/3` opens them.
  defp seal(opts) when is_list(opts) do
    if Config.proper_list?(opts) do
      Enum.map(opts, fn
        {key, value} when key in @secrets and not is_function(value, 0) -> {key, sealed(value)}
        other -> other
      end)
    else
      opts
    end
  end

  defp seal(opts), do: opts

  defp sealed(value), do: fn -> value end

  defp unseal(opts) when is_list(opts) do
    if Config.proper_list?(opts) do
      Enum.map(opts, fn
        {key, value} when key in @secrets and is_function(value, 0) -> {key, value.()}
        other -> other
      end)
    else
      opts
    end
  end

  defp unseal(opts), do: opts

  @doc "The configuration of `module` as its app config and `init/2` give it."
  @spec config(module(), keyword(), :supervisor | :runtime) :: {:ok, keyword()} | :ignore
  def config(module, extra \\ [], context \\ :runtime) do
    app = module.__micelio_storage__(:otp_app)
    base = Application.get_env(app, module, [])

    base =
      if Keyword.keyword?(base),
        do: Keyword.put_new(base, :memory_name, inspect(module)),
        else: base

    module.init(context, Keyword.merge(base, unseal(extra)))
  end

  @doc false
  # The handle a call through `module` uses: the test's store under the
  # sandbox, the one built at boot, or one resolved now.
  @spec handle(module(), term()) :: {:ok, Handle.t()} | {:error, term()}
  def handle(module, []) do
    case Sandbox.lookup(module) do
      :off ->
        case :persistent_term.get({__MODULE__, module}, nil) do
          nil -> resolve(module, [])
          handle -> {:ok, handle}
        end

      sandboxed ->
        named(sandboxed, module)
    end
  end

  def handle(_module, %Handle{} = handle), do: {:ok, handle}

  def handle(module, opts) when is_list(opts) do
    # Options that only shape the call keep a sandboxed test in its store.
    case Config.proper_list?(opts) and Sandbox.lookup_with(module, opts) do
      {:ok, _} = sandboxed -> named(sandboxed, module)
      {:error, _} = error -> error
      _off -> resolve(module, opts)
    end
  end

  def handle(_module, other),
    do:
      {:error, {:invalid_config, :options, "expected a keyword list, got #{Config.shape(other)}"}}

  defp named({:ok, handle}, module), do: {:ok, %{handle | name: module}}
  defp named(error, _module), do: error

  @doc false
  def handle!(module, opts) do
    case handle(module, opts) do
      {:ok, handle} -> handle
      {:error, reason} -> raise Micelio.Storage.Error, reason: reason, operation: :open
    end
  end

  @doc false
  # Runs `Micelio.Storage.fun(args ++ [handle])` for a store module.
  def call(module, fun, args, opts, raising?) do
    # Object options (content type, range, progress...) ride beside the
    # store's handle.
    {object, opts} = Micelio.Storage.ObjectOptions.split(opts)

    with_object = fn handle ->
      if object == [], do: handle, else: [{:storage, handle} | object]
    end

    if raising? do
      apply(Micelio.Storage, fun, args ++ [with_object.(handle!(module, opts))])
    else
      with {:ok, handle} <- handle(module, opts),
           do: apply(Micelio.Storage, fun, args ++ [with_object.(handle)])
    end
  end

  defp resolve(module, opts) do
    case config(module) do
      {:ok, config} ->
        named(Resolved.fetch(opts, [{source(module), config}]), module)

      :ignore ->
        {:error, {:invalid_config, :init, "#{inspect(module)}.init/2 returned :ignore"}}

      other ->
        {:error, {:invalid_config, :init, "expected {:ok, config}, got #{Config.shape(other)}"}}
    end
  end

  defp source(module),
    do: "config #{inspect(module.__micelio_storage__(:otp_app))}, #{inspect(module)}"

  @impl true
  def init({module, opts}) do
    Process.flag(:trap_exit, true)

    case config(module, opts, :supervisor) do
      {:ok, config} ->
        with {:ok, resolved, _env} <- Config.resolve_tracked([], [{source(module), config}]),
             {:ok, handle} <- open_at_boot(resolved) do
          :persistent_term.put({__MODULE__, module}, %{handle | name: module})
          {:ok, module}
        else
          {:error, reason} -> {:stop, boot_error(module, reason)}
        end

      :ignore ->
        :ignore

      other ->
        {:stop, {:invalid_config, :init, "expected {:ok, config}, got #{Config.shape(other)}"}}
    end
  end

  defp open_at_boot(resolved) do
    case Store.open(resolved) do
      {:error, {:io, posix}} -> {:error, {:io, posix, roots(resolved)}}
      other -> other
    end
  end

  defp roots(config),
    do: for(key <- [:local_path, :cache_disk_path], path = config[key], is_binary(path), do: path)

  # A boot failure is `{:invalid_config, setting, message}` whose message
  # names the store, the setting and where it was looked for, so the
  # supervisor's report says what to fix.
  defp boot_error(module, :missing_s3_bucket) do
    {:invalid_config, :s3_bucket,
     "#{inspect(module)} has no S3 bucket: looked in its start options, #{source(module)} " <>
       "and the S3_BUCKET environment variable"}
  end

  defp boot_error(module, :missing_s3_credentials) do
    {:invalid_config, :s3_credentials,
     "#{inspect(module)} found no S3 credentials: looked in its start options and " <>
       "#{source(module)} (s3_access_key_id/s3_secret_access_key, s3_credentials), " <>
       "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE with the shared credentials and " <>
       "config files, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN and the container " <>
       "credentials URI (AWS_CONTAINER_CREDENTIALS_FULL_URI or _RELATIVE_URI); set one, " <>
       "or s3_credentials: :instance on EC2"}
  end

  defp boot_error(module, {:io, posix, roots}) do
    {:invalid_config, :local_path,
     "#{inspect(module)} cannot use its directory #{Enum.join(roots, " or ")}: " <>
       "#{:file.format_error(posix)} (#{posix}); check that it can be created and written " <>
       "(set in #{source(module)})"}
  end

  defp boot_error(module, {:invalid_config, setting, message}) do
    if message =~ inspect(module),
      do: {:invalid_config, setting, message},
      else: {:invalid_config, setting, "#{inspect(module)}: #{message}"}
  end

  defp boot_error(_module, reason), do: reason

  @impl true
  def terminate(_reason, module) do
    :persistent_term.erase({__MODULE__, module})
    :ok
  end
end
