defmodule Micelio.Storage.Config do
  @moduledoc """
  Resolves the configuration of `Micelio.Storage`.

  Each setting is taken from the first place that sets it:

    1. the options of the call (`Micelio.Storage.get(key, local_path: "/srv/x")`);
    2. the application config, `config :micelio, Micelio.Storage, ...`;
    3. an environment variable (`STORAGE_BACKEND`, `STORAGE_LOCAL_PATH`, ...);
    4. the default.

  The application config is read on every call, so `Application.put_env/3`
  takes effect on the next call. A bad value gives
  `{:error, {:invalid_config, setting, message}}`, where `message` says where
  the value came from.

  ## Settings

  | setting | environment variable | default |
  |---|---|---|
  | `backend` | `STORAGE_BACKEND` | `:local` (`:local`, `:s3` or `:tiered`) |
  | `local_path` | `STORAGE_LOCAL_PATH` | `/var/micelio/storage` in prod, `<tmp>/micelio/storage` otherwise |
  | `timeout` | `STORAGE_TIMEOUT_MS` | `30_000` ms per call |
  | `durable` | | `false`; `true` fsyncs local writes and their directory |
  | `s3_bucket` | `S3_BUCKET` | required for `:s3` |
  | `s3_region` | `S3_REGION`, `AWS_REGION`, `AWS_DEFAULT_REGION` | `"us-east-1"` |
  | `s3_access_key_id` | `AWS_ACCESS_KEY_ID` | required for `:s3` |
  | `s3_secret_access_key` | `AWS_SECRET_ACCESS_KEY` | required for `:s3` |
  | `s3_session_token` | `AWS_SESSION_TOKEN` | none |
  | `s3_credentials` | `S3_CREDENTIALS` | keys when set, else `:container` when its URI is set (`:static`, `:container` or `:instance`) |
  | `s3_container_credentials_uri` | `AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` | none (ECS task role, EKS Pod Identity) |
  | `s3_container_authorization_token` | `AWS_CONTAINER_AUTHORIZATION_TOKEN` | none |
  | `s3_container_authorization_token_file` | `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` | none, read on every refresh |
  | `s3_metadata_endpoint` | `AWS_EC2_METADATA_SERVICE_ENDPOINT` | `"http://169.254.169.254"` (EC2 IMDSv2) |
  | `s3_endpoint` | `S3_ENDPOINT` | AWS (`https://s3.<region>.amazonaws.com`) |
  | `s3_url_style` | `S3_URL_STYLE` | `:virtual` on AWS, `:path` on a custom endpoint |
  | `s3_prefix` | `S3_PREFIX` | `""`, a prefix added to every key |
  | `s3_connect_timeout` | `S3_CONNECT_TIMEOUT_MS` | `5_000` ms |
  | `s3_request_timeout` | `S3_REQUEST_TIMEOUT_MS` | `30_000` ms per attempt |
  | `s3_max_retries` | `S3_MAX_RETRIES` | `3` |
  | `s3_pool_size` | `S3_POOL_SIZE` | `64` idle keep-alive connections kept per host (`0`: none) |
  | `s3_unsigned_payload` | | `false`; `true` skips hashing bodies (https only) |
  | `s3_list_page_size` | `S3_LIST_PAGE_SIZE` | `1000` keys per ListObjectsV2 page |
  | `origin_backend` | `STORAGE_ORIGIN_BACKEND` | `:s3` when a bucket is set, else `:local` |
  | `cache_memory_max_bytes` | `STORAGE_CACHE_MEMORY_MAX_BYTES` | `64_000_000`; `0` turns the RAM tier off |
  | `cache_disk_path` | `STORAGE_CACHE_PATH` | `<tmp>/micelio/cache` (`/var/micelio/cache` in prod) |
  | `cache_disk_max_bytes` | `STORAGE_CACHE_DISK_MAX_BYTES` | `1_000_000_000`; `0` turns the disk tier off |
  | `cdn_base_url` | `STORAGE_CDN_BASE_URL` | none (no CDN tier) |
  | `cdn_timeout_ms` | `STORAGE_CDN_TIMEOUT_MS` | `2_000` |
  """

  @app :micelio
  @key Micelio.Storage
  @secrets [:s3_secret_access_key, :s3_session_token, :s3_container_authorization_token]

  @settings %{
    backend: {["STORAGE_BACKEND"], :local, {:enum, [:local, :s3, :tiered]}},
    local_path: {["STORAGE_LOCAL_PATH"], :default_local_path, :abs_path},
    timeout: {["STORAGE_TIMEOUT_MS"], 30_000, :pos_integer},
    durable: {[], false, :boolean},
    s3_bucket: {["S3_BUCKET"], nil, :string},
    s3_region: {["S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"], "us-east-1", :string},
    s3_access_key_id: {["AWS_ACCESS_KEY_ID"], nil, :string},
    s3_secret_access_key: {["AWS_SECRET_ACCESS_KEY"], nil, :string},
    s3_session_token: {["AWS_SESSION_TOKEN"], nil, :string},
    s3_credentials: {["S3_CREDENTIALS"], nil, {:enum, [:static, :container, :instance]}},
    s3_container_credentials_uri:
      {["AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"], nil,
       :container_uri},
    s3_container_authorization_token: {["AWS_CONTAINER_AUTHORIZATION_TOKEN"], nil, :string},
    s3_container_authorization_token_file:
      {["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"], nil, :abs_path},
    s3_metadata_endpoint: {["AWS_EC2_METADATA_SERVICE_ENDPOINT"], "http://169.254.169.254", :url},
    s3_endpoint: {["S3_ENDPOINT"], nil, :url},
    s3_url_style: {["S3_URL_STYLE"], nil, {:enum, [:virtual, :path]}},
    s3_prefix: {["S3_PREFIX"], "", :string},
    s3_connect_timeout: {["S3_CONNECT_TIMEOUT_MS"], 5_000, :pos_integer},
    s3_request_timeout: {["S3_REQUEST_TIMEOUT_MS"], 30_000, :pos_integer},
    s3_max_retries: {["S3_MAX_RETRIES"], 3, :non_neg_integer},
    s3_pool_size: {["S3_POOL_SIZE"], 64, :non_neg_integer},
    s3_unsigned_payload: {[], false, :boolean},
    s3_list_page_size: {["S3_LIST_PAGE_SIZE"], 1000, :pos_integer},
    origin_backend: {["STORAGE_ORIGIN_BACKEND"], :default_origin, {:enum, [:local, :s3]}},
    cache_memory_max_bytes: {["STORAGE_CACHE_MEMORY_MAX_BYTES"], 64_000_000, :non_neg_integer},
    cache_disk_path: {["STORAGE_CACHE_PATH"], :default_cache_path, :abs_path},
    cache_disk_max_bytes: {["STORAGE_CACHE_DISK_MAX_BYTES"], 1_000_000_000, :non_neg_integer},
    cdn_base_url: {["STORAGE_CDN_BASE_URL"], nil, :url},
    cdn_timeout_ms: {["STORAGE_CDN_TIMEOUT_MS"], 2_000, :pos_integer}
  }

  @s3_settings [
    :s3_bucket,
    :s3_region,
    :s3_access_key_id,
    :s3_secret_access_key,
    :s3_session_token,
    :s3_credentials,
    :s3_container_credentials_uri,
    :s3_container_authorization_token,
    :s3_container_authorization_token_file,
    :s3_metadata_endpoint,
    :s3_endpoint,
    :s3_url_style,
    :s3_prefix,
    :s3_connect_timeout,
    :s3_request_timeout,
    :s3_max_retries,
    :s3_pool_size,
    :s3_unsigned_payload,
    :s3_list_page_size
  ]

  @tiered_settings [
    :origin_backend,
    :cache_memory_max_bytes,
    :cache_disk_path,
    :cache_disk_max_bytes,
    :cdn_base_url,
    :cdn_timeout_ms
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
  def settings, do: Map.keys(@settings)

  @doc """
  Resolves the settings one call needs: the common ones plus those of the
  selected backend.

      iex> {:ok, config} = Micelio.Storage.Config.resolve(backend: :local, local_path: "/tmp/x")
      iex> {config.backend, config.local_path}
      {:local, "/tmp/x"}

      iex> Micelio.Storage.Config.resolve(backend: :ftp)
      {:error, {:invalid_config, :backend, "expected one of [:local, :s3, :tiered], got :ftp (from the call's options)"}}
  """
  @spec resolve(keyword()) :: {:ok, t()} | {:error, {:invalid_config, setting, String.t()}}
  def resolve(opts) when is_list(opts) do
    app = Application.get_env(@app, @key, [])

    with :ok <- check_known(opts, "the call's options"),
         :ok <- check_known(app, "config :micelio, Micelio.Storage"),
         {:ok, backend} <- fetch(:backend, opts, app),
         {:ok, timeout} <- fetch(:timeout, opts, app),
         {:ok, durable} <- fetch(:durable, opts, app) do
      base = %{backend: backend, timeout: timeout, durable: durable}
      fetch_all(needed(backend, opts, app), opts, app, base)
    end
  end

  def resolve(other),
    do: {:error, {:invalid_config, :options, "expected a keyword list, got #{inspect(other)}"}}

  defp needed(:local, _opts, _app), do: [:local_path]
  defp needed(:s3, _opts, _app), do: @s3_settings

  defp needed(:tiered, opts, app) do
    case fetch(:origin_backend, opts, app) do
      {:ok, :s3} -> @tiered_settings ++ @s3_settings
      _ -> @tiered_settings ++ [:local_path]
    end
  end

  defp fetch_all([], _opts, _app, acc), do: {:ok, acc}

  defp fetch_all([key | rest], opts, app, acc) do
    with {:ok, value} <- fetch(key, opts, app),
         do: fetch_all(rest, opts, app, Map.put(acc, key, protect(key, value)))
  end

  # Secrets travel wrapped, so inspecting a config never shows them.
  defp protect(key, value) when key in @secrets,
    do: Micelio.Storage.Secret.wrap(value)

  defp protect(_key, value), do: value

  defp check_known(kw, where) when is_list(kw) do
    Enum.find_value(kw, :ok, fn
      {key, _} when is_map_key(@settings, key) ->
        nil

      {key, _} ->
        {:error, {:invalid_config, key, "unknown setting in #{where}"}}

      other ->
        {:error,
         {:invalid_config, :options, "expected a keyword list in #{where}, got #{inspect(other)}"}}
    end)
  end

  defp check_known(other, where),
    do:
      {:error,
       {:invalid_config, :options, "expected a keyword list in #{where}, got #{inspect(other)}"}}

  @doc false
  # The environment variables a resolution of `opts` under the app config
  # `app` that gave `config` could have read, each with whether it holds a
  # secret: those of every setting neither set, and the temporary-directory
  # variables behind the default paths.
  @spec env_inputs(keyword(), keyword(), t()) :: [{String.t(), boolean()}]
  def env_inputs(opts, app, config) do
    # `s3_bucket` decides the default origin even when not in the config.
    open =
      for key <- Enum.uniq(Map.keys(config) ++ [:s3_bucket]),
          not Keyword.has_key?(opts, key),
          not Keyword.has_key?(app, key),
          do: key

    vars =
      for key <- open,
          var <- elem(Map.fetch!(@settings, key), 0),
          do: {var, secret?(key)}

    defaults = Enum.map(open, fn key -> elem(Map.fetch!(@settings, key), 1) end)

    if Enum.any?(defaults, &(&1 in [:default_local_path, :default_cache_path])),
      do: vars ++ [{"TMPDIR", false}, {"TEMP", false}, {"TMP", false}],
      else: vars
  end

  @doc false
  # One setting: call options, then app config, then environment, then default.
  def fetch(key, opts, app) do
    {env_vars, default, type} = Map.fetch!(@settings, key)

    case Keyword.fetch(opts, key) do
      {:ok, value} ->
        cast(key, value, type, "the call's options")

      :error ->
        case Keyword.fetch(app, key) do
          {:ok, value} -> cast(key, value, type, "config :micelio, Micelio.Storage")
          :error -> from_env(key, env_vars, default, type, opts, app)
        end
    end
  end

  defp from_env(key, [], default, _type, opts, app), do: {:ok, default(key, default, opts, app)}

  defp from_env(key, [var | rest], default, type, opts, app) do
    case System.get_env(var) do
      nil -> from_env(key, rest, default, type, opts, app)
      "" -> from_env(key, rest, default, type, opts, app)
      value -> cast(key, value, type, var)
    end
  end

  defp default(_key, :default_local_path, _opts, _app), do: default_dir("storage")
  defp default(_key, :default_cache_path, _opts, _app), do: default_dir("cache")

  defp default(_key, :default_origin, opts, app) do
    case fetch(:s3_bucket, opts, app) do
      {:ok, bucket} when is_binary(bucket) -> :s3
      _ -> :local
    end
  end

  defp default(_key, value, _opts, _app), do: value

  defp default_dir(name) do
    if mix_env() == :prod,
      do: "/var/micelio/#{name}",
      else: Path.join([System.tmp_dir!(), "micelio", name])
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

  defp secret?(key), do: key in @secrets

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
