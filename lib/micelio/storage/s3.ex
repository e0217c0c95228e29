defmodule Micelio.Storage.S3 do
  @moduledoc """
  The S3 backend: any S3-compatible service (AWS S3, MinIO, SeaweedFS,
  DigitalOcean Spaces, Backblaze B2, Cloudflare R2).

  Requests are signed with AWS Signature Version 4 by our own signer (Rust,
  `hmac` + `sha2`) and sent by one pooled keep-alive HTTP client per
  configured store, on the tokio runtime: a request never blocks a BEAM
  scheduler. Idempotent requests are retried on 5xx, 429, `SlowDown`,
  connection resets and timeouts, with capped exponential backoff and full
  jitter, up to `s3_max_retries` and within the call's `:timeout`;
  conditional puts only on 503 and 429 (the server did not apply them).
  Redirects are never followed. A missing bucket is
  `{:error, {:no_such_bucket, bucket}}`, never `:not_found`.

  Credentials follow the AWS SDKs' chain: keys (`s3_access_key_id`,
  `s3_secret_access_key`, or the `AWS_*` variables), the shared files'
  profile (`Micelio.Storage.S3.Profile`), web identity
  (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`, through STS), an ECS
  task role or EKS Pod Identity (`AWS_CONTAINER_CREDENTIALS_*_URI`), or an
  EC2 instance role (`s3_credentials: :instance`). Temporary
  credentials are refreshed five minutes before they expire; a failed
  fetch is `{:error, {:credentials, message}}`.

  Use it through `Micelio.Storage` with `backend: :s3`; see
  `Micelio.Storage.Config` for the settings. The signer is also public:
  `sign_headers/4` and `Micelio.Storage.presigned_url/2`.
  """
  alias Micelio.Storage.{Config, Native, Operation, Secret}

  @doc """
  Completes a resolved S3 configuration before the engine reads it: the
  shared AWS files' profile fills what is unset (`Micelio.Storage.S3.Profile`),
  and `s3_credentials` becomes the source the store will use. Called by
  `Micelio.Storage.Store` for every store with an S3 part; a missing
  bucket or credentials is an error here, before anything is built.

      iex> {:ok, config} =
      ...>   Micelio.Storage.Config.resolve(
      ...>     backend: :s3,
      ...>     s3_bucket: "b",
      ...>     s3_access_key_id: "k",
      ...>     s3_secret_access_key: "s"
      ...>   )
      iex> {:ok, %{s3_credentials: source}} = Micelio.Storage.S3.prepare_settings(config)
      iex> source
      "static"
  """
  @spec prepare_settings(map()) :: {:ok, map()} | {:error, term()}
  def prepare_settings(config) do
    with {:ok, config} <- Micelio.Storage.S3.Profile.apply(config),
         {:ok, source} <- credentials_source(config),
         do: {:ok, %{config | s3_credentials: source}}
  end

  @doc false
  # Which credentials the store uses, as the engine's `s3_credentials`:
  # keys when they are set; else the container endpoint when its URI is set
  # (ECS and EKS set it); the instance metadata service only when asked,
  # since probing it off EC2 would stall. A missing bucket or source is an
  # error here, before any store is built.
  @spec credentials_source(map()) :: {:ok, String.t()} | {:error, atom()}
  def credentials_source(%{s3_bucket: bucket}) when bucket in [nil, ""],
    do: {:error, :missing_s3_bucket}

  def credentials_source(config) do
    keys? =
      present?(config.s3_access_key_id) and present?(Secret.unwrap(config.s3_secret_access_key))

    container? = present?(config.s3_container_credentials_uri)
    web? = present?(config.s3_web_identity_token_file) and present?(config.s3_role_arn)

    # The AWS SDKs' order: keys (settings, environment, then the shared
    # files' profile, filled in by S3.Profile), web identity, container.
    case config.s3_credentials do
      :instance -> {:ok, "instance"}
      :static when keys? -> {:ok, "static"}
      :web_identity when web? -> {:ok, "web_identity"}
      :container when container? -> {:ok, "container"}
      nil when keys? -> {:ok, "static"}
      nil when web? -> {:ok, "web_identity"}
      nil when container? -> {:ok, "container"}
      _ -> {:error, :missing_s3_credentials}
    end
  end

  defp present?(value), do: value not in [nil, ""]

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
  def sign_headers(method, url, headers, opts \\ [])

  def sign_headers(method, url, headers, opts)
      when is_binary(url) and is_list(headers) and is_list(opts) do
    cond do
      not Keyword.keyword?(opts) ->
        {:error,
         {:invalid_config, :options, "expected a keyword list, got a list with other entries"}}

      not Enum.all?(headers, &match?({k, v} when is_binary(k) and is_binary(v), &1)) ->
        {:error, {:invalid_config, :headers, "expected a list of {name, value} strings"}}

      true ->
        sign(method, url, headers, opts)
    end
  end

  # Any other shape: an error that shows no argument (options hold secrets).
  def sign_headers(_method, url, headers, opts) do
    {what, got} =
      cond do
        not is_binary(url) -> {:url, Config.shape(url)}
        not is_list(headers) -> {:headers, Config.shape(headers)}
        true -> {:options, Config.shape(opts)}
      end

    {:error, {:invalid_config, what, "expected #{expected(what)}, got #{got}"}}
  end

  defp expected(:url), do: "a URL string"
  defp expected(:headers), do: "a list of {name, value} strings"
  defp expected(:options), do: "a keyword list"

  defp sign(method, url, headers, opts) do
    {sign_opts, storage_opts} = Keyword.split(opts, [:body, :payload_hash, :datetime, :service])

    with {:ok, config} <- Config.resolve(Keyword.put(storage_opts, :backend, :s3)),
         :ok <- check_credentials(config),
         {:ok, unix} <- unix_time(Keyword.get(sign_opts, :datetime)) do
      uri = URI.parse(url)
      host = if uri.port in [80, 443, nil], do: uri.host, else: "#{uri.host}:#{uri.port}"

      payload_hash =
        case Keyword.fetch(sign_opts, :body) do
          {:ok, body} when is_binary(body) or is_list(body) ->
            Base.encode16(:crypto.hash(:sha256, body), case: :lower)

          {:ok, _} ->
            :invalid

          :error ->
            Keyword.get(sign_opts, :payload_hash, sha256_empty())
        end

      service = Keyword.get(sign_opts, :service, "s3")

      # The NIF gets the keys: every argument is checked first, so no
      # badarg can print them in a stack trace.
      cond do
        not is_binary(uri.host) or uri.host == "" ->
          {:error, {:invalid_config, :url, "expected an absolute http(s) URL"}}

        not is_binary(payload_hash) ->
          {:error, {:invalid_config, :body, "expected iodata or a payload_hash string"}}

        not is_binary(service) ->
          {:error, {:invalid_config, :service, "expected a string"}}

        not (is_atom(method) or is_binary(method)) ->
          {:error, {:invalid_config, :method, "expected an atom or a string"}}

        true ->
          native_sign(config, service, method, uri, host, headers, payload_hash, unix)
      end
    end
  end

  defp native_sign(config, service, method, uri, host, headers, payload_hash, unix) do
    Native.s3_sign_headers(
      {config.s3_access_key_id, Secret.unwrap(config.s3_secret_access_key),
       Secret.unwrap(config.s3_session_token)},
      config.s3_region,
      service,
      method |> to_string() |> String.upcase(),
      canonical_path(uri.path),
      URI.query_decoder(uri.query || "", :rfc3986) |> Enum.to_list(),
      [{"host", host} | headers],
      payload_hash,
      unix
    )
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

  @one_day_ms 86_400_000

  @doc """
  The multipart uploads under the store's prefix that were started and
  never completed nor aborted: `{:ok, [%{key: key, upload_id: id}]}`.
  Failed and abandoned uploads are aborted by the library itself; this
  finds what a VM killed outright may have left, for a cleanup job (or a
  bucket lifecycle rule, `AbortIncompleteMultipartUpload`).

      {:ok, []} = Micelio.Storage.S3.incomplete_uploads(backend: :s3)
  """
  @spec incomplete_uploads(keyword() | Micelio.Storage.Handle.t()) ::
          {:ok, [%{key: String.t(), upload_id: String.t()}]} | {:error, term()}
  def incomplete_uploads(opts \\ []) do
    with {:ok, handle} <- Micelio.Storage.open(opts),
         {:ok, uploads} <- Micelio.Storage.Store.run(handle, Operation.incomplete_uploads()) do
      {:ok, for({key, id} <- uploads, do: %{key: key, upload_id: id})}
    end
  end

  @doc """
  Aborts the multipart uploads under `prefix` (within the store's
  `s3_prefix`) that were started more than `:older_than` milliseconds ago
  (default: one day), and returns how many it aborted. This removes what a
  VM killed mid-upload left behind (`incomplete_uploads/1` lists them); the
  age keeps it away from uploads still in progress. Other backends have no
  uploads to abort: `{:ok, 0}`.

      {:ok, 0} = Micelio.Storage.S3.abort_incomplete_uploads("artifacts/", older_than: 3_600_000)

  Named stores have it too: `MyApp.Artifacts.abort_incomplete_uploads("", older_than: 0)`.
  """
  @spec abort_incomplete_uploads(String.t(), keyword() | Micelio.Storage.Handle.t()) ::
          {:ok, non_neg_integer()} | {:error, term()}
  def abort_incomplete_uploads(prefix, opts \\ [])

  def abort_incomplete_uploads(prefix, %Micelio.Storage.Handle{} = handle),
    do: abort_incomplete_uploads(prefix, storage: handle)

  def abort_incomplete_uploads(prefix, opts) when is_binary(prefix) and is_list(opts) do
    {older_than, opts} =
      if Keyword.keyword?(opts), do: Keyword.pop(opts, :older_than, @one_day_ms), else: {0, opts}

    with :ok <- check_older_than(older_than),
         {:ok, handle} <- Micelio.Storage.open(opts) do
      Micelio.Storage.Store.run(handle, Operation.abort_incomplete_uploads(prefix, older_than))
    end
  end

  def abort_incomplete_uploads(prefix, _opts) when not is_binary(prefix),
    do: {:error, {:invalid_prefix, prefix}}

  def abort_incomplete_uploads(_prefix, opts),
    do:
      {:error,
       {:invalid_config, :options,
        "expected a keyword list, got #{Micelio.Storage.Config.shape(opts)}"}}

  defp check_older_than(ms) when is_integer(ms) and ms >= 0, do: :ok

  defp check_older_than(other),
    do:
      {:error,
       {:invalid_config, :older_than,
        "expected milliseconds (a non-negative integer), got #{Micelio.Storage.Config.shape(other)}"}}

  @doc false
  def unix_time(nil), do: {:ok, System.os_time(:second)}
  def unix_time(%DateTime{} = dt), do: {:ok, DateTime.to_unix(dt)}
  def unix_time(unix) when is_integer(unix), do: {:ok, unix}

  def unix_time(other),
    do:
      {:error,
       {:invalid_config, :datetime, "expected a DateTime or Unix seconds, got #{inspect(other)}"}}

  ## Buckets and object tags

  @doc """
  Creates the store's bucket (in its `s3_region`) and returns
  `{:ok, bucket}`, also when the bucket exists and is ours. A bucket of
  that name owned by someone else is
  `{:error, {:s3_error, 409, "BucketAlreadyExists", _}}`.

      {:ok, "my-app-uploads"} = Micelio.Storage.S3.create_bucket(backend: :s3, s3_bucket: "my-app-uploads")
  """
  @spec create_bucket(keyword() | Micelio.Storage.Handle.t()) ::
          {:ok, String.t()} | {:error, term()}
  def create_bucket(opts \\ []), do: bucket_call(opts, Operation.create_bucket())

  @typedoc "A CORS rule: the origins, methods and headers a browser may use."
  @type cors_rule :: %{
          optional(:allowed_origins) => [String.t()],
          optional(:allowed_methods) => [String.t()],
          optional(:allowed_headers) => [String.t()],
          optional(:expose_headers) => [String.t()],
          optional(:max_age_seconds) => non_neg_integer() | nil
        }

  @doc """
  Replaces the bucket's CORS rules, for browser uploads and downloads
  (see the README's "Uploads from the browser"). Each rule is a map of
  `allowed_origins`, `allowed_methods`, `allowed_headers`,
  `expose_headers` (lists of strings) and `max_age_seconds`.

      :ok =
        Micelio.Storage.S3.put_bucket_cors(
          [%{allowed_origins: ["https://app.example.com"], allowed_methods: ["POST", "PUT"],
             allowed_headers: ["*"], expose_headers: ["ETag"], max_age_seconds: 3600}],
          backend: :s3
        )
  """
  @spec put_bucket_cors([cors_rule()], keyword() | Micelio.Storage.Handle.t()) ::
          :ok | {:error, term()}
  def put_bucket_cors(rules, opts \\ []) do
    with {:ok, rules} <- cors_rules(rules),
         {:ok, :done} <- done(bucket_call(opts, Operation.put_cors(rules))),
         do: :ok
  end

  @doc """
  The bucket's CORS rules, as `put_bucket_cors/2` takes them
  (`{:ok, []}` when none are set).
  """
  @spec get_bucket_cors(keyword() | Micelio.Storage.Handle.t()) ::
          {:ok, [cors_rule()]} | {:error, term()}
  def get_bucket_cors(opts \\ []), do: bucket_call(opts, Operation.get_cors())

  @doc """
  Sets the bucket's lifecycle configuration to one rule that aborts
  multipart uploads left incomplete for `days` days (it replaces any other
  lifecycle rule of the bucket). The server then cleans up what a VM killed
  mid-upload left, without `abort_incomplete_uploads/2` running.

      :ok = Micelio.Storage.S3.put_lifecycle_abort_incomplete(7, backend: :s3)
  """
  @spec put_lifecycle_abort_incomplete(pos_integer(), keyword() | Micelio.Storage.Handle.t()) ::
          :ok | {:error, term()}
  def put_lifecycle_abort_incomplete(days, opts \\ [])

  def put_lifecycle_abort_incomplete(days, opts) when is_integer(days) and days >= 1 do
    with {:ok, :done} <- done(bucket_call(opts, Operation.put_lifecycle_abort_incomplete(days))),
         do: :ok
  end

  def put_lifecycle_abort_incomplete(days, _opts),
    do: {:error, {:invalid_config, :days, "expected a positive integer, got #{inspect(days)}"}}

  @doc """
  Replaces the tags of the object at `key` with `tags`, a map of string
  names to strings (at most 10; `%{}` removes them all). The object's
  content, metadata and ETag stay as they are. A missing key is
  `{:error, :not_found}`; tags outside S3's limits are
  `{:error, {:invalid_config, :tags, message}}`, before any request.

      :ok = Micelio.Storage.S3.put_tags("a.txt", %{"reviewed" => "yes"}, backend: :s3)
      {:ok, %{"reviewed" => "yes"}} = Micelio.Storage.S3.get_tags("a.txt", backend: :s3)
  """
  @spec put_tags(String.t(), %{String.t() => String.t()}, keyword() | Micelio.Storage.Handle.t()) ::
          :ok | {:error, term()}
  def put_tags(key, tags, opts \\ [])

  def put_tags(key, tags, opts) when is_binary(key) and is_map(tags) do
    # The same checks as a put's `tags:` option.
    with {:ok, attributes} <- Micelio.Storage.ObjectOptions.attributes(tags: tags),
         pairs = if(attributes, do: attributes.tags, else: []),
         {:ok, :done} <- done(bucket_call(opts, Operation.put_tags(key, pairs))),
         do: :ok
  end

  # Described by its shape, as the `tags:` option's errors are: a value
  # of any size never ends up whole in a message.
  def put_tags(key, tags, _opts) when is_binary(key),
    do: {:error, {:invalid_config, :tags, "expected a map, got #{Config.shape(tags)}"}}

  def put_tags(key, _tags, _opts), do: {:error, {:invalid_key, key}}

  @doc """
  The tags of `key` (set with the `tags:` option of a put, or with
  `put_tags/3`), as a map.

      {:ok, "a.txt"} = Micelio.Storage.put("a.txt", "x", backend: :s3, tags: %{"team" => "web"})
      {:ok, %{"team" => "web"}} = Micelio.Storage.S3.get_tags("a.txt", backend: :s3)
  """
  @spec get_tags(String.t(), keyword() | Micelio.Storage.Handle.t()) ::
          {:ok, %{String.t() => String.t()}} | {:error, term()}
  def get_tags(key, opts \\ [])

  def get_tags(key, opts) when is_binary(key) do
    with {:ok, pairs} <- bucket_call(opts, Operation.get_tags(key)), do: {:ok, Map.new(pairs)}
  end

  def get_tags(key, _opts), do: {:error, {:invalid_key, key}}

  @cors_keys [:allowed_origins, :allowed_methods, :allowed_headers, :expose_headers]

  defp cors_rules(rules) when is_list(rules) do
    Enum.reduce_while(rules, {:ok, []}, fn rule, {:ok, acc} ->
      case cors_rule(rule) do
        {:ok, rule} -> {:cont, {:ok, acc ++ [rule]}}
        error -> {:halt, error}
      end
    end)
  end

  defp cors_rules(other),
    do: {:error, {:invalid_config, :rules, "expected a list of maps, got #{inspect(other)}"}}

  defp cors_rule(rule) when is_map(rule) do
    lists = Map.new(@cors_keys, &{&1, Map.get(rule, &1, [])})
    age = Map.get(rule, :max_age_seconds)
    unknown = Map.keys(rule) -- [:max_age_seconds | @cors_keys]

    cond do
      unknown != [] ->
        {:error, {:invalid_config, :rules, "unknown CORS rule keys #{inspect(unknown)}"}}

      not Enum.all?(lists, fn {_, v} -> is_list(v) and Enum.all?(v, &is_binary/1) end) ->
        {:error, {:invalid_config, :rules, "#{inspect(@cors_keys)} are lists of strings"}}

      not (is_nil(age) or (is_integer(age) and age >= 0)) ->
        {:error, {:invalid_config, :rules, "max_age_seconds is a non-negative integer"}}

      true ->
        {:ok, Map.put(lists, :max_age_seconds, age)}
    end
  end

  defp cors_rule(other),
    do: {:error, {:invalid_config, :rules, "expected a map, got #{inspect(other)}"}}

  defp done(:ok), do: {:ok, :done}
  defp done(other), do: other

  # Bucket calls go to the S3 store the options resolve to (backend: :s3
  # unless the options or the handle say otherwise).
  defp bucket_call(%Micelio.Storage.Handle{} = handle, op),
    do: Micelio.Storage.Store.run(handle, op)

  defp bucket_call(opts, op) when is_list(opts) do
    # A handle given as `storage:` is the store; otherwise S3 unless the
    # options name another backend.
    opts =
      if Keyword.keyword?(opts) and not Keyword.has_key?(opts, :storage),
        do: Keyword.put_new(opts, :backend, :s3),
        else: opts

    with {:ok, handle} <- Micelio.Storage.open(opts), do: Micelio.Storage.Store.run(handle, op)
  end

  @doc """
  The provider profile of a store's settings: the provider (`s3_provider`,
  else guessed from `s3_endpoint`'s host) and the switches it sets
  (`checksum_headers`, `delete_batch`, `delete_objects`, `post_uploads`,
  `equal_parts`, `copy_if_absent`, `default_region`, `virtual_hosts`).
  Settings given alone override these; see the README's provider table.

      iex> Micelio.Storage.S3.provider_profile(nil, "https://acct.r2.cloudflarestorage.com").provider
      :r2
      iex> Micelio.Storage.S3.provider_profile(:b2, nil).checksum_headers
      false
      iex> Micelio.Storage.S3.provider_profile(:aws, nil).copy_if_absent
      :if_none_match
  """
  @spec provider_profile(atom() | String.t() | nil, String.t() | nil) :: map()
  def provider_profile(provider, endpoint) do
    name = if is_atom(provider) and provider != nil, do: Atom.to_string(provider), else: provider
    profile = Native.s3_profile(name, endpoint)

    %{
      profile
      | provider: String.to_existing_atom(profile.provider),
        copy_if_absent: String.to_existing_atom(profile.copy_if_absent)
    }
  end

  @doc false
  # Whether browser uploads by POST policy work with a store: its
  # `s3_post_uploads`, else its provider's.
  def post_uploads?(%Micelio.Storage.Handle{config: config}) do
    case config[:s3_post_uploads] do
      flag when is_boolean(flag) ->
        flag

      nil ->
        provider_profile(config[:s3_provider], config[:s3_endpoint]).post_uploads
    end
  end

  @doc """
  Asks the configured bucket (of `opts`, or of a store's config) what it
  actually supports, by trying each thing under a prefix of its own
  (`.micelio-doctor/<random>/`, deleted afterwards):
  `{:ok, %{capability => :ok | {:error, reason}}}`.

  The capabilities: `:reachable`, `:tls`, `:credentials`, `:bucket`,
  `:clock_skew` (the server's `Date` within 5 minutes of ours), `:put`,
  `:get`, `:head`, `:range`, `:if_none_match`, `:if_match` (conditional
  puts enforced), `:copy_if_absent` (`copy(..., if_absent: true)` enforced
  by the configured `s3_copy_if_absent`; else `{:error, {:use, mechanism}}`
  naming one that is, or `{:error, {:unsupported, reason}}`), `:checksum_headers` (CRC-32 headers accepted),
  `:content_md5`, `:multipart`, `:multipart_unequal_parts`,
  `:delete_objects`, `:post_policy` (a browser form upload), `:cors` (a
  rule allowing POST or PUT) and `:delete`. `mix micelio.storage.doctor`
  prints them with the settings to use.

      {:ok, %{put: :ok, checksum_headers: {:error, _}}} = Micelio.Storage.S3.probe(backend: :s3)
  """
  @spec probe(keyword()) :: {:ok, %{atom() => :ok | {:error, term()}}} | {:error, term()}
  def probe(opts \\ []) when is_list(opts), do: Micelio.Storage.S3.Probe.run(opts)

  @doc """
  The settings a probe's results call for: the provider profile's switches
  that the bucket contradicts, as a keyword list to put in the config.

      iex> Micelio.Storage.S3.advice(%{checksum_headers: {:error, :x}, content_md5: :ok,
      ...>   delete_objects: :ok, post_policy: :ok}, %{})
      [s3_checksums: :when_required]
      iex> Micelio.Storage.S3.advice(%{copy_if_absent: {:error, {:use, :multipart}}}, %{})
      [s3_copy_if_absent: :multipart]
  """
  @spec advice(map(), map()) :: keyword()
  def advice(results, profile) do
    [
      {:s3_checksums, :when_required,
       match?({:error, _}, results[:checksum_headers]) and results[:content_md5] == :ok and
         Map.get(profile, :checksum_headers, true)},
      {:s3_delete_objects, false,
       match?({:error, _}, results[:delete_objects]) and Map.get(profile, :delete_objects, true)},
      {:s3_post_uploads, false,
       match?({:error, _}, results[:post_policy]) and Map.get(profile, :post_uploads, true)},
      copy_if_absent_advice(results[:copy_if_absent])
    ]
    |> Enum.filter(&elem(&1, 2))
    |> Enum.map(fn {k, v, _} -> {k, v} end)
  end

  defp copy_if_absent_advice({:error, {:use, mechanism}}),
    do: {:s3_copy_if_absent, mechanism, true}

  defp copy_if_absent_advice({:error, {:unsupported, _}}), do: {:s3_copy_if_absent, :none, true}
  defp copy_if_absent_advice(_), do: {:s3_copy_if_absent, nil, false}
end
