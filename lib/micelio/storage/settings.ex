defmodule Micelio.Storage.Settings do
  @moduledoc """
  The table of every setting: the single source of their names,
  environment variables, types, defaults, secrecy and documentation.

  Resolution (`Micelio.Storage.Config`), redaction (secrets are wrapped
  and never stored in caches), the settings the Rust engine receives, and
  the settings table in the docs are all derived from it. The names are
  the same in Rust: the engine reads `s3_connect_timeout` as
  `s3_connect_timeout`.

  Each setting belongs to a group: `:call` settings apply per call, the
  others belong to a backend. A store is built from the settings of its
  backend's groups (the tiered backend adds its origin's).

  ## Adding a backend

  Add its block of settings here, under a new group, and the group to
  `groups/1`; the engine reads them in its Rust module.
  """

  @typedoc "How a value is checked and cast (values from the environment are strings)."
  @type type ::
          :pos_integer
          | :non_neg_integer
          | :boolean
          | :string
          | :url
          | :abs_path
          | :container_uri
          | {:enum, [atom()]}

  @typedoc "One entry of the table."
  @type t :: %{
          name: atom(),
          env: [String.t()],
          type: type(),
          default: term(),
          secret: boolean(),
          group: :call | :local | :s3 | :tiered | :memory,
          doc: String.t()
        }

  # {name, group, env vars, type, default, secret?, doc}. Defaults that are
  # atoms starting with `default_` are computed (see Config).
  @table [
    {:backend, :call, ["STORAGE_BACKEND"], {:enum, [:local, :s3, :tiered, :memory]}, :local,
     false, "`:local`, `:s3`, `:tiered` or `:memory` (for tests)"},
    {:timeout, :call, ["STORAGE_TIMEOUT_MS"], :pos_integer, 30_000, false,
     "per-call timeout in ms; the call returns `{:error, :timeout}`"},
    {:durable, :call, [], :boolean, false, false, "fsync local writes and their directory"},
    {:local_path, :local, ["STORAGE_LOCAL_PATH"], :abs_path, :default_local_path, false,
     "root of the local backend (absolute); `/var/micelio/storage` in prod, `<tmp>/micelio/storage` otherwise"},
    {:s3_bucket, :s3, ["S3_BUCKET"], :string, nil, false,
     "required for `:s3` (`{:error, :missing_s3_bucket}` otherwise)"},
    {:s3_region, :s3, ["S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"], :string, :default_region,
     false,
     "signing region; default: the `region` of the shared config file's profile, else the provider's (`auto` on R2 and GCS), else `us-east-1`"},
    {:s3_access_key_id, :s3, ["AWS_ACCESS_KEY_ID"], :string, nil, false,
     "access key id (`{:error, :missing_s3_credentials}` when no source is set)"},
    {:s3_secret_access_key, :s3, ["AWS_SECRET_ACCESS_KEY"], :string, nil, true,
     "secret access key"},
    {:s3_session_token, :s3, ["AWS_SESSION_TOKEN"], :string, nil, true,
     "session token of temporary credentials"},
    {:s3_credentials, :s3, ["S3_CREDENTIALS"],
     {:enum, [:static, :web_identity, :container, :instance]}, nil, false,
     "`:static`, `:container` or `:instance`; default: keys when set, else `:container` when its URI is set"},
    {:s3_container_credentials_uri, :s3,
     ["AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"],
     :container_uri, nil, false, "ECS task role / EKS Pod Identity endpoint"},
    {:s3_container_authorization_token, :s3, ["AWS_CONTAINER_AUTHORIZATION_TOKEN"], :string, nil,
     true, "sent as `Authorization` to the container endpoint"},
    {:s3_container_authorization_token_file, :s3, ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"],
     :abs_path, nil, false, "file holding that token, re-read on every refresh"},
    {:s3_web_identity_token_file, :s3, ["AWS_WEB_IDENTITY_TOKEN_FILE"], :abs_path, nil, false,
     "an OIDC token file (EKS IRSA), exchanged for credentials with STS AssumeRoleWithWebIdentity; re-read on every refresh"},
    {:s3_role_arn, :s3, ["AWS_ROLE_ARN"], :string, nil, false,
     "the role the web identity token assumes"},
    {:s3_role_session_name, :s3, ["AWS_ROLE_SESSION_NAME"], :string, nil, false,
     "the STS session name (default `micelio-storage`)"},
    {:s3_sts_endpoint, :s3, ["AWS_ENDPOINT_URL_STS"], :url, nil, false,
     "STS endpoint; default `https://sts.<region>.amazonaws.com` (regional)"},
    {:s3_profile, :s3, ["AWS_PROFILE"], :string, nil, false,
     "the profile of the shared credentials and config files (default `default`)"},
    {:s3_shared_credentials_file, :s3, ["AWS_SHARED_CREDENTIALS_FILE"], :string, nil, false,
     "default `~/.aws/credentials`"},
    {:s3_config_file, :s3, ["AWS_CONFIG_FILE"], :string, nil, false, "default `~/.aws/config`"},
    {:s3_metadata_endpoint, :s3, ["AWS_EC2_METADATA_SERVICE_ENDPOINT"], :url,
     "http://169.254.169.254", false, "EC2 instance metadata (IMDSv2)"},
    {:s3_endpoint, :s3, ["S3_ENDPOINT"], :url, nil, false,
     "any S3-compatible service; default: AWS in the region"},
    {:s3_url_style, :s3, ["S3_URL_STYLE"], {:enum, [:virtual, :path]}, nil, false,
     "bucket addressing; default `:virtual` on AWS, `:path` elsewhere"},
    {:s3_prefix, :s3, ["S3_PREFIX"], :string, "", false,
     "prepended to every key (include the trailing `/`)"},
    {:s3_connect_timeout, :s3, ["S3_CONNECT_TIMEOUT_MS"], :pos_integer, 5_000, false,
     "TCP connect timeout, ms"},
    {:s3_request_timeout, :s3, ["S3_REQUEST_TIMEOUT_MS"], :pos_integer, 30_000, false,
     "timeout of one attempt, ms"},
    {:s3_max_retries, :s3, ["S3_MAX_RETRIES"], :non_neg_integer, 3, false,
     "retries of idempotent requests"},
    {:s3_pool_size, :s3, ["S3_POOL_SIZE"], :non_neg_integer, 64, false,
     "idle keep-alive connections kept per host (`0`: none)"},
    {:s3_unsigned_payload, :s3, [], :boolean, false, false,
     "send `UNSIGNED-PAYLOAD` instead of hashing bodies (https only)"},
    {:s3_list_page_size, :s3, ["S3_LIST_PAGE_SIZE"], :pos_integer, 1000, false,
     "keys per ListObjectsV2 page"},
    {:s3_ca_cert_file, :s3, ["S3_CA_CERT_FILE"], :abs_path, nil, false,
     "a PEM file of extra root certificates, for an S3 service behind a private CA (trusted beside the system roots)"},
    {:s3_multipart_threshold, :s3, ["S3_MULTIPART_THRESHOLD"], :pos_integer, 16_777_216, false,
     "uploads from this size on are multipart (16 MiB: smaller ones are one PUT, as fast and one request)"},
    {:s3_part_size, :s3, ["S3_PART_SIZE"], :pos_integer, 8_388_608, false,
     "bytes per part and per ranged GET (8 MiB: S3's sweet spot; raised as needed to stay within 10,000 parts)"},
    {:s3_parts_in_flight, :s3, ["S3_PARTS_IN_FLIGHT"], :pos_integer, 4, false,
     "parts (or ranges) sent at once; memory of a transfer is bounded by parts in flight x part size"},
    {:s3_copy_multipart_threshold, :s3, ["S3_COPY_MULTIPART_THRESHOLD"], :pos_integer,
     5_368_709_120, false,
     "copies of larger objects go in parts (UploadPartCopy): 5 GiB is CopyObject's limit; lower it only to test"},
    {:s3_sse, :s3, ["S3_SSE"], {:enum, [:aes256, :kms]}, nil, false,
     "server-side encryption of writes: `:aes256` (SSE-S3) or `:kms` (SSE-KMS)"},
    {:s3_sse_kms_key_id, :s3, ["S3_SSE_KMS_KEY_ID"], :string, nil, false,
     "the KMS key of `s3_sse: :kms` (default: the account's S3 key)"},
    {:s3_provider, :s3, ["S3_PROVIDER"],
     {:enum, [:aws, :r2, :b2, :gcs, :minio, :spaces, :wasabi, :seaweedfs, :other]}, nil, false,
     "the service's profile, which sets the switches below; default: guessed from `s3_endpoint`'s host (see the provider table)"},
    {:s3_checksums, :s3, ["S3_CHECKSUMS"], {:enum, [:when_supported, :when_required]}, nil, false,
     "`:when_supported` sends CRC-32 checksum headers; `:when_required` sends Content-MD5 instead (B2 refuses the headers); default: the profile's"},
    {:s3_delete_batch_size, :s3, ["S3_DELETE_BATCH_SIZE"], :pos_integer, nil, false,
     "keys per DeleteObjects request, at most 1000 (R2: 700); default: the profile's"},
    {:s3_delete_objects, :s3, ["S3_DELETE_OBJECTS"], :boolean, nil, false,
     "whether DeleteObjects exists (GCS: no; keys are then deleted one by one, also after a `NotImplemented` answer); default: the profile's"},
    {:s3_post_uploads, :s3, ["S3_POST_UPLOADS"], :boolean, nil, false,
     "whether browser uploads by POST policy work (R2: no; `presigned_post/2` then refuses and the LiveView helper signs a PUT); default: the profile's"},
    {:s3_equal_parts, :s3, ["S3_EQUAL_PARTS"], :boolean, nil, false,
     "all parts but the last of one size (R2 requires it); off, an upload of unknown size doubles its part size every 1,000 parts instead of stopping at 10,000; default: the profile's"},
    {:s3_copy_if_absent, :s3, ["S3_COPY_IF_ABSENT"],
     {:enum, [:if_none_match, :r2_header, :multipart, :none]}, nil, false,
     "how `copy(..., if_absent: true)` is atomic: `If-None-Match` on CopyObject (AWS), R2's `cf-copy-destination-if-none-match`, a multipart copy completed with `If-None-Match`, or `:none` (refused); default: the profile's"},
    {:memory_max_bytes, :memory, ["STORAGE_MEMORY_MAX_BYTES"], :pos_integer, 256_000_000, false,
     "bound of the memory backend; a put beyond it fails with `{:io, :enospc}`"},
    {:memory_name, :memory, [], :string, "default", false,
     "memory stores with the same name share their objects; named stores default to their module, sandbox checkouts get their own"},
    {:origin_backend, :tiered, ["STORAGE_ORIGIN_BACKEND"], {:enum, [:local, :s3]},
     :default_origin, false, "the tiered backend's origin; default `:s3` when a bucket is set"},
    {:cache_memory_max_bytes, :tiered, ["STORAGE_CACHE_MEMORY_MAX_BYTES"], :non_neg_integer,
     64_000_000, false, "RAM tier budget, keys and bookkeeping included; `0` turns it off"},
    {:cache_memory_max_object_bytes, :tiered, ["STORAGE_CACHE_MEMORY_MAX_OBJECT_BYTES"],
     :non_neg_integer, 2_000_000, false,
     "largest object the RAM tier holds; larger ones are served but not kept (at most a quarter of the RAM budget)"},
    {:cache_disk_path, :tiered, ["STORAGE_CACHE_PATH"], :abs_path, :default_cache_path, false,
     "disk tier directory; `/var/micelio/cache` in prod, `<tmp>/micelio/cache` otherwise"},
    {:cache_disk_max_bytes, :tiered, ["STORAGE_CACHE_DISK_MAX_BYTES"], :non_neg_integer,
     1_000_000_000, false, "disk tier budget; `0` turns it off"},
    {:cache_disk_max_object_bytes, :tiered, ["STORAGE_CACHE_DISK_MAX_OBJECT_BYTES"],
     :non_neg_integer, 250_000_000, false,
     "largest object the disk tier holds (at most a quarter of the disk budget)"},
    {:cache_revalidate_after_ms, :tiered, ["STORAGE_CACHE_REVALIDATE_AFTER_MS"], :non_neg_integer,
     60_000, false,
     "a cached copy older than this is checked with the origin (If-None-Match on S3, a stat on local) before it is served; bounds staleness against writers outside the cluster"},
    {:cdn_base_url, :tiered, ["STORAGE_CDN_BASE_URL"], :url, nil, false,
     "CDN tier: `GET <cdn_base_url>/<url-encoded key>`; none by default"},
    {:cdn_timeout_ms, :tiered, ["STORAGE_CDN_TIMEOUT_MS"], :pos_integer, 2_000, false,
     "bound on one CDN request, body included"}
  ]

  @entries for {name, group, env, type, default, secret, doc} <- @table,
               do:
                 {name,
                  %{
                    name: name,
                    group: group,
                    env: env,
                    type: type,
                    default: default,
                    secret: secret,
                    doc: doc
                  }}

  @by_name Map.new(@entries)
  @names Enum.map(@entries, &elem(&1, 0))
  @secrets for {name, %{secret: true}} <- @entries, do: name

  @doc """
  Every setting, in table order.

      iex> :s3_bucket in Micelio.Storage.Settings.names()
      true
  """
  @spec names() :: [atom()]
  def names, do: @names

  @doc "The entry of `name`, or `nil` for an unknown setting."
  @spec fetch(atom()) :: t() | nil
  def fetch(name), do: Map.get(@by_name, name)

  @doc "True when `name` is a known setting."
  @spec known?(term()) :: boolean()
  def known?(name), do: is_map_key(@by_name, name)

  @doc """
  The secret settings: never shown, logged, or kept in a cache.

      iex> Micelio.Storage.Settings.secret?(:s3_secret_access_key)
      true
  """
  @spec secret?(atom()) :: boolean()
  def secret?(name), do: name in @secrets

  @doc "The names of the secret settings."
  @spec secrets() :: [atom()]
  def secrets, do: @secrets

  @doc """
  The groups of settings a store of `backend` is built from.

      iex> Micelio.Storage.Settings.groups(:tiered, :s3)
      [:tiered, :s3]
  """
  @spec groups(atom(), atom() | nil) :: [atom()]
  def groups(backend, origin \\ nil)
  def groups(:local, _origin), do: [:local]
  def groups(:s3, _origin), do: [:s3]
  def groups(:memory, _origin), do: [:memory]
  def groups(:tiered, origin), do: [:tiered | groups(origin)]

  @doc "The settings of the given groups, in table order."
  @spec in_groups([atom()]) :: [atom()]
  def in_groups(groups), do: for({name, %{group: g}} <- @entries, g in groups, do: name)

  @doc """
  The settings table as Markdown, for the docs.
  """
  @spec markdown() :: String.t()
  def markdown do
    rows =
      for {name, e} <- @entries do
        env = e.env |> Enum.map_join(", ", &"`#{&1}`")
        secret = if e.secret, do: " (secret)", else: ""
        "| `#{name}`#{secret} | #{env} | #{default_text(e.default)} | #{e.doc} |"
      end

    Enum.join(
      ["| setting | environment variable | default | meaning |", "|---|---|---|---|" | rows],
      "\n"
    )
  end

  defp default_text(nil), do: "none"
  defp default_text(:default_local_path), do: "see meaning"
  defp default_text(:default_cache_path), do: "see meaning"
  defp default_text(:default_origin), do: "see meaning"
  defp default_text(:default_region), do: "see meaning"
  defp default_text(value), do: "`#{inspect(value)}`"
end
