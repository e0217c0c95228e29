defmodule Micelio.Storage.Config do
  @moduledoc """
  Resolves the configuration of `Micelio.Storage`.

  Each setting is taken from the first place that sets it:

    1. the options of the call (`Micelio.Storage.get(key, local_path: "/srv/x")`);
    2. the application config: `config :micelio, Micelio.Storage, ...`, or
       `config :micelio_storage, Micelio.Storage, ...` (the choice for apps
       not called `:micelio`: Mix warns about config for an application it
       does not know). Setting both is an error that names both;
    3. an environment variable (`STORAGE_BACKEND`, `STORAGE_LOCAL_PATH`, ...);
    4. the default.

  The application config is checked on every call (through the
  application controller, without reading it: see the README), so
  `Application.put_env/3` takes effect on the next call. A bad value gives
  `{:error, {:invalid_config, setting, message}}`, where `message` says where
  the value came from.

  ## Settings

  The table is generated from `Micelio.Storage.Settings`, the one place
  each setting is defined.

  #{Micelio.Storage.Settings.markdown()}
  """

  alias Micelio.Storage.Settings

  @key Micelio.Storage
  @app_sources [
    micelio: "config :micelio, Micelio.Storage",
    micelio_storage: "config :micelio_storage, Micelio.Storage"
  ]

  @typedoc "A resolved setting name."
  @type setting :: atom()

  @typedoc "Resolved settings of one call."
  @type t :: %{required(setting) => term()}

  @doc """
  The names of every setting.

      iex> :local_path in Micelio.Storage.Config.settings()
      true
  """
  @spec settings() :: [setting]
  def settings, do: Settings.names()

  @doc """
  Resolves the settings one call needs: the common ones plus those of the
  selected backend.

      iex> {:ok, config} = Micelio.Storage.Config.resolve(backend: :local, local_path: "/tmp/x")
      iex> {config.backend, config.local_path}
      {:local, "/tmp/x"}

      iex> Micelio.Storage.Config.resolve(backend: :ftp)
      {:error, {:invalid_config, :backend, "expected one of [:local, :s3, :tiered, :memory], got :ftp (from the call's options)"}}
  """
  @spec resolve(keyword()) :: {:ok, t()} | {:error, {:invalid_config, setting, String.t()}}
  def resolve(opts) do
    with {:ok, config, _env} <- resolve_tracked(opts, app_env()), do: {:ok, config}
  end

  @doc false
  # The application config as `resolve_tracked/2` takes it: what each
  # supported app holds under `Micelio.Storage` (read on every call), each
  # with the name it goes by in messages.
  @spec app_env() :: [{String.t(), term()}]
  def app_env, do: app_env(raw_app_env())

  @doc false
  # What the two supported apps hold under `Micelio.Storage`, as a tuple
  # in `@app_sources` order: cheap to compare in place.
  @spec raw_app_env() :: tuple()
  [{app_a, _}, {app_b, _}] = @app_sources
  @app_a app_a
  @app_b app_b
  # Two plain reads: a comprehension building the tuple cost 0.4 µs more
  # per call, and this is on every call without a handle.
  def raw_app_env, do: {Application.get_env(@app_a, @key), Application.get_env(@app_b, @key)}

  @doc false
  # `app_env/0` from a `raw_app_env/0` tuple.
  @spec app_env(tuple()) :: [{String.t(), term()}]
  def app_env(raw),
    do: Enum.zip_with(@app_sources, Tuple.to_list(raw), fn {_app, label}, kw -> {label, kw} end)

  @doc false
  # Resolves once under the app config `app` (from `app_env/0`), and returns the environment
  # variables the resolution read, each as `{name, value or false, secret?}`
  # (value as `:os.getenv/1` gives it), so a cached resolution can tell
  # when it is stale.
  @spec resolve_tracked(term(), term()) ::
          {:ok, t(), [{charlist(), charlist() | false, boolean()}]} | {:error, term()}
  def resolve_tracked(opts, app_env) when is_list(opts) do
    with :ok <- check_proper(opts),
         {:ok, app, where} <- pick_app(app_env),
         ctx = %{opts: opts, app: app, where: where, env: []},
         :ok <- check_known(opts, "the call's options"),
         :ok <- check_known(app, where),
         {:ok, backend, ctx} <- fetch(:backend, ctx),
         {:ok, timeout, ctx} <- fetch(:timeout, ctx),
         {:ok, durable, ctx} <- fetch(:durable, ctx),
         {:ok, names, ctx} <- needed(backend, ctx),
         base = %{backend: backend, timeout: timeout, durable: durable},
         {:ok, config, ctx} <- fetch_all(names, ctx, base) do
      {:ok, config, Enum.reverse(ctx.env)}
    end
  end

  def resolve_tracked(other, _app),
    do: {:error, {:invalid_config, :options, "expected a keyword list, got #{shape(other)}"}}

  @doc false
  # The per-call settings `timeout` and `durable` of `opts`, checked, as a
  # map to lay over a handle's config (the sandbox keeps calls that give
  # only these in the test's store).
  @spec call_settings(keyword()) :: {:ok, map()} | {:error, term()}
  def call_settings(opts) do
    Enum.reduce_while(opts, {:ok, %{}}, fn
      {:timeout, t}, {:ok, acc} when is_integer(t) and t > 0 ->
        {:cont, {:ok, Map.put(acc, :timeout, t)}}

      {:durable, d}, {:ok, acc} when is_boolean(d) ->
        {:cont, {:ok, Map.put(acc, :durable, d)}}

      {:timeout, other}, _ ->
        {:halt,
         {:error,
          {:invalid_config, :timeout,
           "expected a positive integer (ms) in the call's options, got #{shape(other)}"}}}

      {key, other}, _ ->
        {:halt,
         {:error,
          {:invalid_config, key, "expected a boolean in the call's options, got #{shape(other)}"}}}
    end)
  end

  @doc false
  # Whether `term` is a proper list. Options are checked with it before any
  # list function touches them: `:lists.keyfind/3` on an improper list
  # raises, and the stack trace would print the list, secrets included.
  @spec proper_list?(term()) :: boolean()
  def proper_list?([]), do: true
  def proper_list?([_ | tail]), do: proper_list?(tail)
  def proper_list?(_), do: false

  @doc false
  # `:ok` for a proper list, else the error every entry point gives.
  @spec check_proper(term()) :: :ok | {:error, term()}
  def check_proper(opts) do
    if proper_list?(opts),
      do: :ok,
      else: {:error, {:invalid_config, :options, "expected a keyword list, got #{shape(opts)}"}}
  end

  # One source of app config; both set is a mistake worth stopping for.
  defp pick_app(app_env) do
    case Enum.reject(app_env, fn {_label, kw} -> kw in [nil, []] end) do
      [] ->
        if length(app_env) == length(@app_sources), do: warn_misplaced()
        {:ok, [], "the application config"}

      [{label, kw}] ->
        {:ok, kw, label}

      both ->
        names = Enum.map_join(both, " and ", fn {label, _} -> label end)
        {:error, {:invalid_config, :app_config, "set in both #{names}; keep one"}}
    end
  end

  # `config :my_app, Micelio.Storage, ...` is read by no one: say so once
  # per app instead of silently using the defaults. Runs only when no
  # supported app config is set, on a resolution that is not cached yet.
  defp warn_misplaced do
    for {app, _, _} <- Application.loaded_applications(),
        app not in [:micelio, :micelio_storage],
        Application.get_env(app, @key) != nil,
        not :persistent_term.get({__MODULE__, :warned, app}, false) do
      :persistent_term.put({__MODULE__, :warned, app}, true)

      require Logger

      Logger.warning(
        "config :#{app}, Micelio.Storage is ignored: Micelio.Storage reads " <>
          "config :micelio_storage, Micelio.Storage (or config :micelio, Micelio.Storage)"
      )
    end

    :ok
  end

  @doc false
  # What a term is, without showing it: options may hold secrets.
  @spec shape(term()) :: String.t()
  def shape(term) when is_map(term), do: "a map"
  def shape(term) when is_tuple(term), do: "a tuple of #{tuple_size(term)} elements"
  def shape(term) when is_binary(term), do: "a string"

  def shape(term) when is_list(term),
    do: if(proper_list?(term), do: "a list", else: "an improper list")

  def shape(term) when is_atom(term), do: "the atom #{inspect(term)}"
  def shape(term) when is_integer(term), do: "an integer"
  def shape(term) when is_float(term), do: "a float"
  def shape(term) when is_function(term), do: "a function"
  def shape(term) when is_pid(term), do: "a pid"
  def shape(_term), do: "another kind of term"

  defp needed(:tiered, ctx) do
    with {:ok, origin, ctx} <- fetch(:origin_backend, ctx),
         do: {:ok, Settings.in_groups(Settings.groups(:tiered, origin)), ctx}
  end

  defp needed(backend, ctx), do: {:ok, Settings.in_groups(Settings.groups(backend)), ctx}

  defp fetch_all([], ctx, acc), do: {:ok, acc, ctx}

  defp fetch_all([key | rest], ctx, acc) do
    with {:ok, value, ctx} <- fetch(key, ctx),
         do: fetch_all(rest, ctx, Map.put(acc, key, protect(key, value)))
  end

  # Secrets travel wrapped, so inspecting a config never shows them.
  defp protect(key, value) do
    if Settings.secret?(key), do: Micelio.Storage.Secret.wrap(value), else: value
  end

  defp check_known(kw, where) when is_list(kw) do
    Enum.find_value(kw, :ok, fn
      {key, _} when is_atom(key) ->
        if Settings.known?(key),
          do: nil,
          else: {:error, {:invalid_config, key, "unknown setting in #{where}#{suggest(key)}"}}

      other ->
        {:error,
         {:invalid_config, :options,
          "expected a keyword list in #{where}, got an entry that is #{shape(other)}"}}
    end)
  end

  defp check_known(other, where),
    do:
      {:error,
       {:invalid_config, :options, "expected a keyword list in #{where}, got #{shape(other)}"}}

  # The known setting closest to a misspelled one, when one is close.
  defp suggest(key) do
    typed = Atom.to_string(key)

    {best, score} =
      Settings.names()
      |> Enum.map(&{&1, String.jaro_distance(typed, Atom.to_string(&1))})
      |> Enum.max_by(&elem(&1, 1))

    if score >= 0.8, do: "; did you mean #{inspect(best)}?", else: ""
  end

  # One setting: call options, then app config, then environment, then
  # default. `nil` is unset at every level, as an unset variable read with
  # `System.get_env/1` in config/runtime.exs gives it.
  defp fetch(key, ctx) do
    %{env: env_vars, default: default, type: type} = Settings.fetch(key)

    case Keyword.get(ctx.opts, key) do
      nil ->
        case Keyword.get(ctx.app, key) do
          nil ->
            from_env(key, env_vars, default, type, ctx)

          value ->
            with {:ok, v} <- cast(key, value, type, ctx.where), do: {:ok, v, ctx}
        end

      value ->
        with {:ok, v} <- cast(key, value, type, "the call's options"), do: {:ok, v, ctx}
    end
  end

  defp from_env(key, [], default, _type, ctx), do: default(key, default, ctx)

  defp from_env(key, [var | rest], default, type, ctx) do
    {value, ctx} = getenv(var, Settings.secret?(key), ctx)

    case value do
      nil -> from_env(key, rest, default, type, ctx)
      "" -> from_env(key, rest, default, type, ctx)
      value -> with {:ok, v} <- cast(key, value, type, var), do: {:ok, v, ctx}
    end
  end

  # Reads an environment variable and notes what was read.
  defp getenv(var, secret?, ctx) do
    name = String.to_charlist(var)
    raw = :os.getenv(name)
    value = if raw == false, do: nil, else: List.to_string(raw)
    {value, %{ctx | env: [{name, raw, secret?} | ctx.env]}}
  end

  defp default(_key, :default_local_path, ctx), do: default_dir("storage", ctx)
  defp default(_key, :default_cache_path, ctx), do: default_dir("cache", ctx)

  defp default(_key, :default_origin, ctx) do
    case fetch(:s3_bucket, ctx) do
      {:ok, bucket, ctx} when is_binary(bucket) -> {:ok, :s3, ctx}
      {:ok, _none, ctx} -> {:ok, :local, ctx}
      _error -> {:ok, :local, ctx}
    end
  end

  # The shared config file's region for the profile, else us-east-1. The
  # files' locations come from settings and HOME: inputs of the resolution.
  defp default(_key, :default_region, ctx) do
    with {:ok, profile, ctx} <- fetch(:s3_profile, ctx),
         {:ok, file, ctx} <- fetch(:s3_config_file, ctx),
         {:ok, provider, ctx} <- fetch(:s3_provider, ctx),
         {:ok, endpoint, ctx} <- fetch(:s3_endpoint, ctx) do
      {_home, ctx} = getenv("HOME", false, ctx)

      {:ok,
       Micelio.Storage.S3.Profile.region(profile, file) ||
         Micelio.Storage.S3.provider_profile(provider, endpoint).default_region, ctx}
    end
  end

  defp default(_key, value, ctx), do: {:ok, value, ctx}

  defp default_dir(name, ctx) do
    if mix_env() == :prod do
      {:ok, "/var/micelio/#{name}", ctx}
    else
      # `System.tmp_dir!/0` reads these: they are inputs of the resolution.
      ctx =
        Enum.reduce(["TMPDIR", "TEMP", "TMP"], ctx, fn var, ctx ->
          {_value, ctx} = getenv(var, false, ctx)
          ctx
        end)

      {:ok, Path.join([System.tmp_dir!(), "micelio", name]), ctx}
    end
  end

  # Inside Mix (dev, test, bench) the host's Mix env decides; a release has no
  # Mix and is production.
  defp mix_env do
    if Code.ensure_loaded?(Mix) and function_exported?(Mix, :env, 0), do: Mix.env(), else: :prod
  end

  # Casting: values from the environment arrive as strings.

  # Optional settings whose type otherwise wants a value: nil means unset.
  defp cast(key, nil, _type, _from)
       when key in [:s3_credentials, :s3_container_authorization_token_file],
       do: {:ok, nil}

  defp cast(key, value, {:enum, allowed} = type, from) when is_binary(value) do
    case Enum.find(allowed, &(Atom.to_string(&1) == String.downcase(value))) do
      nil -> invalid(key, type, value, from)
      atom -> {:ok, atom}
    end
  end

  defp cast(key, value, {:enum, allowed} = type, from) do
    if value in allowed, do: {:ok, value}, else: invalid(key, type, value, from)
  end

  defp cast(key, value, int_type, from)
       when int_type in [:pos_integer, :non_neg_integer] and is_binary(value) do
    case Integer.parse(String.replace(value, "_", "")) do
      {int, ""} -> cast(key, int, int_type, from)
      _ -> invalid(key, int_type, value, from)
    end
  end

  defp cast(_key, value, :pos_integer, _from) when is_integer(value) and value > 0,
    do: {:ok, value}

  defp cast(_key, value, :non_neg_integer, _from) when is_integer(value) and value >= 0,
    do: {:ok, value}

  defp cast(_key, value, :boolean, _from) when is_boolean(value), do: {:ok, value}
  defp cast(_key, nil, type, _from) when type in [:string, :url, :container_uri], do: {:ok, nil}

  defp cast(_key, value, :string, _from) when is_binary(value), do: {:ok, value}

  defp cast(key, value, :url, from) when is_binary(value) do
    case URI.parse(value) do
      %URI{scheme: scheme, host: host}
      when scheme in ["http", "https"] and is_binary(host) and host != "" ->
        {:ok, String.trim_trailing(value, "/")}

      _ ->
        invalid(key, :url, value, from)
    end
  end

  # ECS gives a path on its fixed link-local host; a full URI must be https
  # or stay on this machine or the AWS credential hosts, because the
  # authorization token is sent to it.
  defp cast(key, "/" <> _ = path, :container_uri, from),
    do: cast(key, "http://169.254.170.2" <> path, :container_uri, from)

  defp cast(key, value, :container_uri, from) when is_binary(value) do
    case URI.parse(value) do
      %URI{scheme: "https", host: host} when is_binary(host) and host != "" ->
        {:ok, value}

      %URI{scheme: "http", host: host} when is_binary(host) ->
        if trusted_http_host?(host),
          do: {:ok, value},
          else: invalid(key, :container_uri, value, from)

      _ ->
        invalid(key, :container_uri, value, from)
    end
  end

  defp cast(key, value, :abs_path, from) when is_binary(value) do
    if Path.type(value) == :absolute, do: {:ok, value}, else: invalid(key, :abs_path, value, from)
  end

  defp cast(key, value, type, from), do: invalid(key, type, value, from)

  defp invalid(key, type, value, from) do
    shown = if secret?(key), do: "**redacted**", else: inspect(value)
    {:error, {:invalid_config, key, "expected #{describe(type)}, got #{shown} (from #{from})"}}
  end

  defp secret?(key), do: Settings.secret?(key)

  defp describe({:enum, allowed}), do: "one of #{inspect(allowed)}"
  defp describe(:pos_integer), do: "a positive integer"
  defp describe(:non_neg_integer), do: "a non-negative integer"
  defp describe(:boolean), do: "a boolean"
  defp describe(:string), do: "a string"
  defp describe(:url), do: "an http(s) URL"
  defp describe(:abs_path), do: "an absolute path"

  defp describe(:container_uri),
    do: "a path, an https URL, or an http URL to loopback or the ECS/EKS credential hosts"

  defp trusted_http_host?(host) do
    host in ["localhost", "169.254.170.2", "169.254.170.23", "fd00:ec2::23", "[fd00:ec2::23]"] or
      match?({:ok, {127, _, _, _}}, :inet.parse_address(String.to_charlist(host))) or
      host in ["::1", "[::1]"]
  end
end
