defmodule Micelio.Storage.S3 do
  @moduledoc """
  The S3 backend: any S3-compatible service (AWS S3, MinIO, SeaweedFS,
  DigitalOcean Spaces, Backblaze B2, Cloudflare R2).

  Requests are signed with AWS Signature Version 4 by our own signer (Rust,
  `hmac` + `sha2`) and sent by one pooled keep-alive HTTP client per
  configured store, on the tokio runtime: a request never blocks a BEAM
  scheduler. Idempotent requests are retried on 5xx, 429, `SlowDown`,
  connection resets and timeouts, with capped exponential backoff and full
  jitter, up to `s3_max_retries` and within the call's `:timeout`.

  Credentials are keys (`s3_access_key_id`, `s3_secret_access_key`, or the
  `AWS_*` variables), or temporary ones from an ECS task role or EKS Pod
  Identity (`AWS_CONTAINER_CREDENTIALS_*_URI`, used when no keys are set)
  or an EC2 instance role (`s3_credentials: :instance`). Temporary
  credentials are refreshed five minutes before they expire; a failed
  fetch is `{:error, {:credentials, message}}`.

  Use it through `Micelio.Storage` with `backend: :s3`; see
  `Micelio.Storage.Config` for the settings. The signer is also public:
  `sign_headers/4` and `Micelio.Storage.presigned_url/2`.
  """
  @behaviour Micelio.Storage.Backend

  alias Micelio.Storage.{Async, Config, Native, Secret, Stores}

  @impl true
  def open(config) do
    with :ok <- check_required(config) do
      Stores.fetch(spec(config), fn -> Native.s3_open(native_config(config)) end)
    end
  end

  @doc false
  # What identifies a built store: the settings, with the secrets replaced
  # by a digest so the store cache never holds them.
  def spec(config) do
    secrets = [
      Secret.unwrap(config.s3_secret_access_key) || "",
      0,
      Secret.unwrap(config.s3_session_token) || "",
      0,
      Secret.unwrap(config.s3_container_authorization_token) || ""
    ]

    {:s3,
     Map.drop(native_config(config), [
       :secret_access_key,
       :session_token,
       :container_authorization_token
     ]), :crypto.hash(:sha256, secrets)}
  end

  @doc false
  def check_required(config) do
    if config.s3_bucket in [nil, ""] do
      {:error, :missing_s3_bucket}
    else
      with {:ok, _source} <- credentials_source(config), do: :ok
    end
  end

  # Keys when they are set; else the container endpoint when its URI is
  # set (ECS and EKS set it); the instance metadata service only when asked,
  # since probing it off EC2 would stall.
  defp credentials_source(config) do
    keys? = present?(config.s3_access_key_id) and present?(config.s3_secret_access_key)
    container? = present?(config.s3_container_credentials_uri)

    case config.s3_credentials do
      :instance -> {:ok, :instance}
      :static when keys? -> {:ok, :static}
      :container when container? -> {:ok, :container}
      nil when keys? -> {:ok, :static}
      nil when container? -> {:ok, :container}
      _ -> {:error, :missing_s3_credentials}
    end
  end

  defp present?(value), do: value not in [nil, ""]

  @doc false
  def native_config(config) do
    {:ok, source} = credentials_source(config)

    %{
      bucket: config.s3_bucket,
      region: config.s3_region,
      endpoint: config.s3_endpoint,
      url_style: config.s3_url_style && Atom.to_string(config.s3_url_style),
      prefix: config.s3_prefix,
      credentials: Atom.to_string(source),
      access_key_id: config.s3_access_key_id,
      secret_access_key: Secret.unwrap(config.s3_secret_access_key),
      session_token: Secret.unwrap(config.s3_session_token),
      container_credentials_uri: config.s3_container_credentials_uri,
      container_authorization_token: Secret.unwrap(config.s3_container_authorization_token),
      container_authorization_token_file: config.s3_container_authorization_token_file,
      metadata_endpoint: config.s3_metadata_endpoint,
      connect_timeout_ms: config.s3_connect_timeout,
      request_timeout_ms: config.s3_request_timeout,
      max_retries: config.s3_max_retries,
      pool_size: config.s3_pool_size,
      unsigned_payload: config.s3_unsigned_payload,
      list_page_size: config.s3_list_page_size
    }
  end

  @impl true
  def get(store, key, %{timeout: t}), do: Async.call(t, &Native.s3_get(store, &1, key, false, t))

  @impl true
  def get_with_meta(store, key, %{timeout: t}),
    do: Async.call(t, &Native.s3_get(store, &1, key, true, t))

  @impl true
  def head(store, key, %{timeout: t}), do: Async.call(t, &Native.s3_head(store, &1, key, t))

  @impl true
  def put(store, key, content, condition, %{timeout: t}),
    do: Async.call(t, &Native.s3_put(store, &1, key, content, condition, t))

  @impl true
  def delete(store, key, %{timeout: t}), do: Async.call(t, &Native.s3_delete(store, &1, key, t))

  @impl true
  def list(store, prefix, %{timeout: t}), do: Async.call(t, &Native.s3_list(store, &1, prefix, t))

  @doc """
  Signs an HTTP request with SigV4 and returns the headers to add to it:
  `x-amz-date`, `x-amz-content-sha256`, `x-amz-security-token` (for session
  credentials) and `authorization`.

  ## Options

    * `:body` - the request body (hashed), or `:payload_hash` - its hex
      SHA-256 or `"UNSIGNED-PAYLOAD"`; default: the empty body;
    * `:datetime` - a `DateTime` or Unix seconds to sign at (default: now),
      for reproducible signatures;
    * `:service` - default `"s3"`;
    * the S3 settings (`:s3_access_key_id`, `:s3_secret_access_key`,
      `:s3_session_token`, `:s3_region`) override the configuration. This
      function signs with keys only; `Micelio.Storage.presigned_url/2`
      also works with container and instance credentials.

  ## Examples

      iex> {:ok, headers} =
      ...>   Micelio.Storage.S3.sign_headers(:get, "https://examplebucket.s3.amazonaws.com/test.txt", [],
      ...>     s3_access_key_id: "AKIAIOSFODNN7EXAMPLE",
      ...>     s3_secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
      ...>     s3_region: "us-east-1",
      ...>     datetime: ~U[2013-05-24 00:00:00Z])
      iex> List.keyfind(headers, "x-amz-date", 0)
      {"x-amz-date", "20130524T000000Z"}
  """
  @spec sign_headers(atom() | String.t(), String.t(), [{String.t(), String.t()}], keyword()) ::
          {:ok, [{String.t(), String.t()}]} | {:error, term()}
  def sign_headers(method, url, headers, opts \\ []) do
    {sign_opts, storage_opts} = Keyword.split(opts, [:body, :payload_hash, :datetime, :service])

    with {:ok, config} <- Config.resolve(Keyword.put(storage_opts, :backend, :s3)),
         :ok <- check_credentials(config),
         {:ok, unix} <- unix_time(Keyword.get(sign_opts, :datetime)) do
      uri = URI.parse(url)
      host = if uri.port in [80, 443, nil], do: uri.host, else: "#{uri.host}:#{uri.port}"

      payload_hash =
        case Keyword.fetch(sign_opts, :body) do
          {:ok, body} -> Base.encode16(:crypto.hash(:sha256, body), case: :lower)
          :error -> Keyword.get(sign_opts, :payload_hash, sha256_empty())
        end

      Native.s3_sign_headers(
        {config.s3_access_key_id, Secret.unwrap(config.s3_secret_access_key),
         Secret.unwrap(config.s3_session_token)},
        config.s3_region,
        Keyword.get(sign_opts, :service, "s3"),
        method |> to_string() |> String.upcase(),
        canonical_path(uri.path),
        URI.query_decoder(uri.query || "", :rfc3986) |> Enum.to_list(),
        [{"host", host} | headers],
        payload_hash,
        unix
      )
    end
  end

  defp check_credentials(config) do
    if config.s3_access_key_id in [nil, ""] or config.s3_secret_access_key in [nil, ""],
      do: {:error, :missing_s3_credentials},
      else: :ok
  end

  defp sha256_empty, do: Base.encode16(:crypto.hash(:sha256, ""), case: :lower)

  # S3 encodes each decoded path segment once, RFC 3986 style.
  defp canonical_path(nil), do: "/"
  defp canonical_path(""), do: "/"

  defp canonical_path(path) do
    path
    |> String.split("/")
    |> Enum.map_join(
      "/",
      &(&1 |> URI.decode() |> URI.encode(fn c -> URI.char_unreserved?(c) end))
    )
  end

  @doc false
  def unix_time(nil), do: {:ok, System.os_time(:second)}
  def unix_time(%DateTime{} = dt), do: {:ok, DateTime.to_unix(dt)}
  def unix_time(unix) when is_integer(unix), do: {:ok, unix}

  def unix_time(other),
    do:
      {:error,
       {:invalid_config, :datetime, "expected a DateTime or Unix seconds, got #{inspect(other)}"}}
end
