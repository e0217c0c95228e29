defmodule Micelio.Storage do
  @moduledoc """
  One storage API for Elixir apps over three backends: the local filesystem
  (the default), any S3-compatible service, and a tiered read cache
  (RAM -> SSD -> CDN -> origin). The I/O is done by a Rust engine.

      {:ok, "sessions/abc/files/main.ex"} =
        Micelio.Storage.put("sessions/abc/files/main.ex", "IO.puts(:hi)")

      {:ok, "IO.puts(:hi)"} = Micelio.Storage.get("sessions/abc/files/main.ex")
      true = Micelio.Storage.exists?("sessions/abc/files/main.ex")
      {:ok, ["sessions/abc/files/main.ex"]} = Micelio.Storage.list("sessions/abc/")
      {:ok, _} = Micelio.Storage.delete("sessions/abc/files/main.ex")

  ## Keys

  A key is a relative, `/`-separated UTF-8 path of at most 1024 bytes. These
  give `{:error, {:invalid_key, key}}`: an empty key, a leading `/`, empty,
  `.` or `..` segments, control characters (NUL included) and backslashes.

  ## Options

  Every function takes a trailing keyword list that overrides the
  configuration for that call (see `Micelio.Storage.Config` for all settings),
  or a `Micelio.Storage.Handle` from `open/1`, which skips resolving the
  configuration on each call:

    * `:backend` - `:local`, `:s3` or `:tiered`;
    * `:local_path` - the root directory of the local backend;
    * `:timeout` - milliseconds before the call gives `{:error, :timeout}`
      (default 30 000);
    * `:durable` - `true` fsyncs local writes and their directory.

  Options that describe the object or the transfer (`:content_type`,
  `:metadata`, `:range`, `:progress`, ...) sit beside them: see
  `Micelio.Storage.ObjectOptions`. Large objects go through `put_file/3`,
  `put_stream/3`, `get_file/3` and `stream/2`.

  ## Errors

  Functions return `{:error, reason}` where `reason` is an atom or a small
  tagged tuple: `:not_found`, `:precondition_failed`, `:timeout`,
  `{:invalid_key, key}`, `{:invalid_prefix, prefix}`, `{:unsafe_path, key}`,
  `{:invalid_config, setting, message}`, `{:io, posix}`,
  `{:forbidden, code}`, `{:s3_error, status, code, message}`,
  `{:network, reason}` (naming the endpoint), `{:no_such_bucket, bucket}`,
  `{:credentials, message}`, `:missing_s3_bucket`, `:missing_s3_credentials`,
  `:changed` and `{:checksum_mismatch, expected, got}` from large-object
  reads, and `{:partial, deleted, failures}` from `delete_many/2`. The README's
  error table says what each means and what to do about it.
  The bang variants raise `Micelio.Storage.Error` with that reason.
  """

  alias Micelio.Storage.{
    Error,
    Handle,
    Lookup,
    Metadata,
    ObjectOptions,
    Operation,
    Presign,
    Resolved,
    Store,
    Telemetry
  }

  @doc """
  Turns a module into a named store with the whole API, configured under
  its own app, as an Ecto repo is:

      defmodule MyApp.Storage do
        use Micelio.Storage, otp_app: :my_app
      end

      # config/runtime.exs
      config :my_app, MyApp.Storage, backend: :s3, s3_bucket: "my-app-artifacts"

      # lib/my_app/application.ex
      children = [MyApp.Storage, ...]

      MyApp.Storage.put("a.txt", "hello")
      MyApp.Storage.get("a.txt")

  Every function of `Micelio.Storage` is there with the same arguments
  (`put/3`, `get/2`, `list/2`, `copy/3`, `health/1`, the bang variants...),
  plus `presigned_url/2`, `child_spec/1`, `start_link/1` and `config/0`.
  Started in a supervision tree, the store is built at boot and a bad
  setting fails the boot; the optional `init/2` callback adjusts the config
  at runtime (see `Micelio.Storage.NamedStore`). An app can define several
  store modules, each with its own backend. Under `Micelio.Storage.Sandbox`,
  calls without options go to the current test's store.
  """
  defmacro __using__(opts), do: Micelio.Storage.NamedStore.Functions.define(opts)

  @typedoc "A storage key: a relative `/`-separated path."
  @type key :: String.t()

  @typedoc "Per-call options (see the module doc), or a handle from `open/1`."
  @type opts :: keyword() | Handle.t()

  @typedoc "The reason of an `{:error, reason}`."
  @type reason ::
          :not_found
          | :precondition_failed
          | :timeout
          | :missing_s3_bucket
          | :missing_s3_credentials
          | {:invalid_key, term()}
          | {:invalid_prefix, term()}
          | {:unsafe_path, key}
          | {:invalid_config, atom(), String.t()}
          | {:io, atom() | {:errno, integer()}}
          | {:forbidden, String.t()}
          | {:s3_error, pos_integer(), String.t(), String.t()}
          | {:network, String.t()}
          | {:credentials, String.t()}
          | {:no_such_bucket, String.t()}
          | {:partial, [key], [{key, term()}]}
          | {:sandbox, :not_checked_out | :not_started | :already_checked_out | :already_allowed}
          | :changed
          | :corrupt
          | {:checksum_mismatch, String.t(), String.t()}
          | {:panic, String.t()}

  @typedoc "Object metadata returned by `head/2` (and with the content by `get_with_metadata/2`); see `Micelio.Storage.Metadata`."
  @type metadata :: Micelio.Storage.Metadata.t()

  @doc """
  Stores `content` (any iodata) under `key`, replacing what was there.

  The write is atomic: readers see the old or the new content, never a mix.

      iex> {:ok, "notes/today.txt"} = Micelio.Storage.put("notes/today.txt", ["buy ", "milk"])
      iex> Micelio.Storage.get("notes/today.txt")
      {:ok, "buy milk"}
  """
  @spec put(key, iodata, opts) :: {:ok, key} | {:error, reason}
  def put(key, content, opts \\ []), do: do_put(key, content, :always, opts)

  @doc """
  Stores `content` only if `key` does not exist yet.

  When many processes race on one key, exactly one wins; the others get
  `{:error, :precondition_failed}`.

      iex> Micelio.Storage.put_if_none_match("locks/job-1", "owner-a")
      {:ok, "locks/job-1"}
      iex> Micelio.Storage.put_if_none_match("locks/job-1", "owner-b")
      {:error, :precondition_failed}
  """
  @spec put_if_none_match(key, iodata, opts) :: {:ok, key} | {:error, reason}
  def put_if_none_match(key, content, opts \\ []), do: do_put(key, content, :if_none_match, opts)

  @doc """
  Stores `content` only if the current object's ETag is `etag`
  (compare-and-swap). A stale ETag or a missing key gives
  `{:error, :precondition_failed}`.

      iex> {:ok, _} = Micelio.Storage.put("counter", "1")
      iex> {:ok, %{etag: etag}} = Micelio.Storage.head("counter")
      iex> Micelio.Storage.put_if_match("counter", "2", etag)
      {:ok, "counter"}
      iex> Micelio.Storage.put_if_match("counter", "3", etag)
      {:error, :precondition_failed}
  """
  @spec put_if_match(key, iodata, String.t(), opts) :: {:ok, key} | {:error, reason}
  def put_if_match(key, content, etag, opts \\ [])

  def put_if_match(key, content, etag, opts) when is_binary(etag),
    do: do_put(key, content, {:if_match, etag}, opts)

  def put_if_match(_key, _content, etag, _opts),
    do: {:error, {:invalid_config, :etag, "expected a string, got #{inspect(etag)}"}}

  defp do_put(key, content, condition, opts) do
    op =
      case condition do
        :always -> :put
        :if_none_match -> :put_if_none_match
        {:if_match, _} -> :put_if_match
      end

    {object, opts} = ObjectOptions.split(opts)

    with {:ok, attrs} <- ObjectOptions.attributes(object),
         {:ok, opts} <- Lookup.storage(object, opts) do
      run(
        op,
        key,
        opts,
        fn handle ->
          case Store.run(
                 handle,
                 Operation.put(key, content, condition, handle.config.durable, attrs)
               ) do
            :ok -> {:ok, key}
            error -> error
          end
        end,
        fn _ -> content_size(content) end
      )
    end
  end

  defp content_size(content) when is_binary(content), do: byte_size(content)

  defp content_size(content) do
    IO.iodata_length(content)
  rescue
    ArgumentError -> 0
  end

  @doc """
  Reads the content stored under `key`.

      iex> {:ok, _} = Micelio.Storage.put("a.txt", "hello")
      iex> Micelio.Storage.get("a.txt")
      {:ok, "hello"}
      iex> Micelio.Storage.get("missing.txt")
      {:error, :not_found}
  """
  @spec get(key, opts) :: {:ok, binary} | {:error, reason}
  def get(key, opts \\ [])

  # The hot path of cache hits: no closure, no resolution, and on a RAM hit
  # not even the telemetry check (hits are counted by `stats/1`).
  def get(key, %Handle{mode: :cached, store: store} = handle) when is_binary(key) do
    case Micelio.Storage.Native.store_get_cached(store, key, false) do
      :miss -> below_ram(:get, handle, key, false)
      hit_or_error -> hit_or_error
    end
  end

  def get(key, %Handle{} = handle) when is_binary(key) do
    if Telemetry.enabled?(),
      do: Telemetry.read(:get, handle, key, false),
      else: Store.get(handle, key, false)
  end

  # The documented call: no options to split, and while the remembered
  # handle holds, not even the lookup.
  def get(key, []) when is_binary(key) do
    case Resolved.plain_hit() do
      :miss -> with {:ok, handle} <- Lookup.handle([]), do: get(key, handle)
      handle -> get(key, handle)
    end
  end

  # Options the calling process used last and that still hold: no split,
  # no lookup.
  def get(key, [_ | _] = opts) when is_binary(key) do
    case Lookup.remembered(opts) do
      {:ok, handle} -> get(key, handle)
      :miss -> get_with_options(key, opts)
    end
  end

  def get(key, opts) when is_binary(key), do: get_with_options(key, opts)

  def get(key, _opts), do: {:error, {:invalid_key, key}}

  defp get_with_options(key, opts) when is_list(opts) do
    case ObjectOptions.split(opts) do
      {[], opts} ->
        with {:ok, handle} <- Lookup.handle(opts), do: get(key, handle)

      {object, opts} ->
        with {:ok, range} <- ObjectOptions.range(object),
             {:ok, opts} <- Lookup.storage(object, opts) do
          run(
            :get,
            key,
            opts,
            fn handle -> Store.run(handle, Operation.get(key, false, range)) end,
            &read_size/1
          )
        end
    end
  end

  defp get_with_options(key, opts) do
    with {:ok, handle} <- Lookup.handle(opts), do: get(key, handle)
  end

  @doc """
  Reads the content and its metadata in one consistent step.

      iex> {:ok, _} = Micelio.Storage.put("a.txt", "hello")
      iex> {:ok, %{content: "hello", size: 5, etag: etag}} = Micelio.Storage.get_with_metadata("a.txt")
      iex> is_binary(etag)
      true
  """
  @spec get_with_metadata(key, opts) ::
          {:ok,
           %{
             content: binary,
             etag: String.t(),
             size: non_neg_integer,
             last_modified: DateTime.t()
           }}
          | {:error, reason}
  def get_with_metadata(key, opts \\ []) do
    {object, opts} = ObjectOptions.split(opts)

    with {:ok, range} <- ObjectOptions.range(object),
         {:ok, opts} <- Lookup.storage(object, opts) do
      read_with_metadata(key, opts, range)
    end
  end

  defp read_with_metadata(key, opts, range) do
    read = fn
      handle when range != nil ->
        Telemetry.observe(
          :get_with_metadata,
          key,
          handle,
          fn -> Store.run(handle, Operation.get(key, true, range)) end,
          &read_size/1
        )

      handle ->
        if Telemetry.enabled?(),
          do: Telemetry.read(:get_with_metadata, handle, key, true),
          else: Store.get(handle, key, true)
    end

    with_handle(key, opts, fn handle ->
      case read.(handle) do
        {:ok, content, meta} -> {:ok, Map.put(Metadata.from_native(meta), :content, content)}
        error -> error
      end
    end)
  end

  @doc """
  Returns the size, ETag and last modification time of `key` without reading
  its content.

      iex> {:ok, _} = Micelio.Storage.put("a.txt", "hello")
      iex> {:ok, %{size: 5, etag: _, last_modified: %DateTime{}}} = Micelio.Storage.head("a.txt")
  """
  @spec head(key, opts) :: {:ok, metadata} | {:error, reason}
  def head(key, opts \\ []) do
    run(:head, key, opts, fn handle ->
      case Store.run(handle, Operation.head(key)) do
        {:ok, meta} -> {:ok, Metadata.from_native(meta)}
        error -> error
      end
    end)
  end

  @doc """
  Tells whether `key` holds an object. Only objects count, not directories.

  Raises `Micelio.Storage.Error` when the answer is not known (an I/O error,
  an invalid key, a network failure): it never answers a silent `false`.

      iex> {:ok, _} = Micelio.Storage.put("dir/a.txt", "x")
      iex> Micelio.Storage.exists?("dir/a.txt")
      true
      iex> Micelio.Storage.exists?("dir")
      false
  """
  @spec exists?(key, opts) :: boolean
  def exists?(key, opts \\ []) do
    case head(key, opts) do
      {:ok, _} -> true
      {:error, :not_found} -> false
      {:error, reason} -> Error.unwrap!({:error, reason}, :exists?, key, opts)
    end
  end

  @doc """
  Lists every key that starts with `prefix`, recursively and sorted.

  The prefix is a plain string prefix, as in S3's ListObjectsV2: `"a/b"`
  matches `"a/b/c"` and `"a/bc"`. `""` lists everything.

      iex> for k <- ["s/1/a", "s/1/b/c", "s/2/a"], do: {:ok, _} = Micelio.Storage.put(k, "x")
      iex> Micelio.Storage.list("s/1/")
      {:ok, ["s/1/a", "s/1/b/c"]}
  """
  @spec list(String.t(), opts) :: {:ok, [key]} | {:error, reason}
  def list(prefix \\ "", opts \\ [])

  def list(prefix, opts) when is_binary(prefix) do
    with {:ok, handle} <- Lookup.handle(opts),
         do:
           Telemetry.observe(:list, prefix, handle, fn ->
             Store.run(handle, Operation.list(prefix))
           end)
  end

  def list(prefix, _opts), do: {:error, {:invalid_prefix, prefix}}

  @doc """
  Deletes `key`. Deleting a missing key also succeeds.

      iex> {:ok, _} = Micelio.Storage.put("a.txt", "x")
      iex> Micelio.Storage.delete("a.txt")
      {:ok, "a.txt"}
      iex> Micelio.Storage.delete("a.txt")
      {:ok, "a.txt"}
  """
  @spec delete(key, opts) :: {:ok, key} | {:error, reason}
  def delete(key, opts \\ []) do
    run(:delete, key, opts, fn handle ->
      case Store.run(handle, Operation.delete(key, handle.config.durable)) do
        :ok -> {:ok, key}
        error -> error
      end
    end)
  end

  @doc """
  Copies the object at `source_key` to `destination_key`, replacing what
  was there. A missing source gives `{:error, :not_found}`.

  The copy is made where the data lives: S3 copies on the server
  (CopyObject), the local backend copies in the kernel into a temp file and
  renames it, so the destination appears whole or not at all. On the tiered
  backend the origin copies and the cached copies of the destination are
  dropped.

      iex> {:ok, _} = Micelio.Storage.put("drafts/a.txt", "v1")
      iex> Micelio.Storage.copy("drafts/a.txt", "published/a.txt")
      {:ok, "published/a.txt"}
      iex> Micelio.Storage.get("published/a.txt")
      {:ok, "v1"}
      iex> Micelio.Storage.copy("drafts/missing.txt", "published/b.txt")
      {:error, :not_found}
      iex> Micelio.Storage.copy("drafts/a.txt", "published/a.txt", if_absent: true)
      {:error, :precondition_failed}
  """
  @spec copy(key, key, opts) :: {:ok, key} | {:error, reason}
  def copy(source_key, destination_key, opts \\ [])

  def copy(source, destination, opts) when is_binary(source) and is_binary(destination) do
    with {:ok, if_absent, opts} <- copy_condition(opts),
         {:ok, handle} <- Lookup.handle(opts) do
      Telemetry.observe(:copy, source, handle, fn ->
        case Store.run(
               handle,
               Operation.copy(source, destination, handle.config.durable, if_absent)
             ) do
          :ok -> {:moved, copied_bytes(handle, destination), {:ok, destination}}
          error -> error
        end
      end)
    end
  end

  def copy(source, destination, _opts) do
    bad = if is_binary(source), do: destination, else: source
    {:error, {:invalid_key, bad}}
  end

  # `if_absent:` is the copy's own option; the rest picks the store.
  defp copy_condition(opts) when is_list(opts) do
    if Micelio.Storage.Config.proper_list?(opts) do
      case Keyword.pop(opts, :if_absent, false) do
        {flag, rest} when is_boolean(flag) ->
          {:ok, flag, rest}

        {other, _} ->
          {:error,
           {:invalid_config, :if_absent,
            "expected a boolean in the call's options, got #{Micelio.Storage.Config.shape(other)}"}}
      end
    else
      {:ok, false, opts}
    end
  end

  defp copy_condition(opts), do: {:ok, false, opts}

  # The size of a copy, for telemetry's `bytes`: the engine's copy does not
  # report it (S3's CopyObject answer has no size), so the destination is
  # asked, only when events are sent.
  defp copied_bytes(handle, destination) do
    with true <- Telemetry.enabled?(),
         {:ok, meta} <- Store.run(handle, Operation.head(destination)) do
      Metadata.from_native(meta).size
    else
      _ -> 0
    end
  end

  @doc """
  Deletes every key in `keys`. Missing keys count as deleted, as with
  `delete/2`.

  Returns `{:ok, deleted_keys}` when every key is gone, or
  `{:error, {:partial, deleted_keys, failures}}` where `failures` lists
  `{key, reason}` for each key that could not be deleted. An invalid key
  fails the whole call before anything is deleted. S3 deletes in batches
  of 1,000 keys per request (DeleteObjects); other backends one by one.

      iex> for k <- ["tmp/1", "tmp/2"], do: {:ok, _} = Micelio.Storage.put(k, "x")
      iex> Micelio.Storage.delete_many(["tmp/1", "tmp/2", "tmp/never-was"])
      {:ok, ["tmp/1", "tmp/2", "tmp/never-was"]}
      iex> Micelio.Storage.list("tmp/")
      {:ok, []}
  """
  @spec delete_many([key], opts) ::
          {:ok, [key]} | {:error, {:partial, [key], [{key, reason}]}} | {:error, reason}
  def delete_many(keys, opts \\ [])

  def delete_many(keys, opts) when is_list(keys) do
    case Enum.find(keys, &(not is_binary(&1))) do
      nil ->
        with {:ok, handle} <- Lookup.handle(opts) do
          Telemetry.observe(:delete_many, nil, handle, fn ->
            Store.run(handle, Operation.delete_many(keys, handle.config.durable))
          end)
        end

      bad ->
        {:error, {:invalid_key, bad}}
    end
  end

  def delete_many(keys, _opts),
    do: {:error, {:invalid_config, :keys, "expected a list of keys, got #{inspect(keys)}"}}

  @doc """
  Returns a presigned URL for `key` in the configured S3 store, which any
  HTTP client can use without credentials until it expires.

  ## Options

    * `:method` - `:get` (default) or `:put`;
    * `:expires_in` - seconds, 1 to 604800 (default 3600);
    * `:datetime` - a `DateTime` or Unix seconds to sign at (default: now),
      for reproducible URLs;
    * any storage setting (`s3_bucket`, `s3_endpoint`, ...).

  A URL signed with temporary credentials (a session token: web identity,
  a container or instance role, `s3_session_token`) carries the token in
  its `X-Amz-Security-Token` query parameter, as SigV4 requires: whoever
  holds the URL holds that token until the URL expires, and the URL stops
  working when the credentials do, whatever `:expires_in` says. Under
  `Micelio.Storage.Sandbox` the URL is signed with the sandbox's test
  credentials, without a server.

  ## Examples

      iex> {:ok, url} =
      ...>   Micelio.Storage.presigned_url("reports/q1.pdf",
      ...>     method: :get, expires_in: 600, datetime: ~U[2026-01-02 03:04:05Z],
      ...>     s3_bucket: "docs", s3_region: "eu-west-1",
      ...>     s3_access_key_id: "AKIDEXAMPLE", s3_secret_access_key: "secret")
      iex> url =~ "https://docs.s3.eu-west-1.amazonaws.com/reports/q1.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256"
      true
      iex> url =~ "X-Amz-Date=20260102T030405Z" and url =~ "X-Amz-Expires=600"
      true
  """
  @spec presigned_url(key, keyword) :: {:ok, String.t()} | {:error, reason}
  def presigned_url(key, opts \\ [])

  def presigned_url(key, opts) when is_binary(key) and is_list(opts) do
    if Keyword.keyword?(opts),
      do: Presign.url(key, opts),
      else: {:error, Presign.not_keyword(opts)}
  end

  def presigned_url(key, opts) when is_binary(key),
    do:
      {:error,
       {:invalid_config, :options,
        "expected a keyword list, got #{Micelio.Storage.Config.shape(opts)}"}}

  def presigned_url(key, _opts), do: {:error, {:invalid_key, key}}

  @doc """
  A signed POST policy for a browser upload straight to S3, by HTML form or
  `FormData`: `{:ok, %{url: url, fields: fields}}`. The browser posts the
  fields, then the file as the last field named `"file"`. S3 enforces the
  conditions on the upload, the size limit among them (a signed PUT URL
  cannot cap it).

  Options (the others pick the store, as for every call):

    * `content_length_range: {min, max}`: the accepted sizes, in bytes;
    * `content_type:` (exact) or `content_type_starts_with:` (`"image/"`);
    * `key_starts_with: true`: the first argument is a prefix, and the
      form's `key` may be any key under it (`fields["key"]` is
      `<prefix>${filename}`, which S3 fills with the file's name);
    * `expires_in:` seconds (default 3600, at most 604800);
    * `success_action_status:` `200`, `201` (an XML answer) or `204`;
    * `metadata:` a map of `x-amz-meta-*` values the upload must carry;
    * `cache_control:` the stored object's `Cache-Control`;
    * `datetime:` when the validity starts (default now).

  With an `s3_prefix`, keys are under it. Backends other than S3 answer
  `{:error, {:invalid_config, :backend, _}}`.

      {:ok, %{url: url, fields: fields}} =
        Micelio.Storage.presigned_post("avatars/",
          key_starts_with: true,
          content_length_range: {1, 5_000_000},
          content_type_starts_with: "image/",
          success_action_status: 201
        )
  """
  @spec presigned_post(String.t(), keyword()) ::
          {:ok, %{url: String.t(), fields: %{String.t() => String.t()}}} | {:error, reason}
  def presigned_post(key_or_prefix, opts \\ [])

  def presigned_post(key_or_prefix, opts) when is_binary(key_or_prefix) and is_list(opts) do
    if Keyword.keyword?(opts),
      do: Presign.post(key_or_prefix, opts),
      else: {:error, Presign.not_keyword(opts)}
  end

  def presigned_post(key_or_prefix, opts) when is_binary(key_or_prefix),
    do:
      {:error,
       {:invalid_config, :options,
        "expected a keyword list, got #{Micelio.Storage.Config.shape(opts)}"}}

  def presigned_post(key, _opts), do: {:error, {:invalid_key, key}}

  @doc "Like `put/3`, but returns the key or raises `Micelio.Storage.Error`."
  @spec put!(key, iodata, opts) :: key
  def put!(key, content, opts \\ []), do: Error.unwrap!(put(key, content, opts), :put, key, opts)

  @doc "Like `put_if_none_match/3`, but returns the key or raises `Micelio.Storage.Error`."
  @spec put_if_none_match!(key, iodata, opts) :: key
  def put_if_none_match!(key, content, opts \\ []),
    do: Error.unwrap!(put_if_none_match(key, content, opts), :put_if_none_match, key, opts)

  @doc "Like `put_if_match/4`, but returns the key or raises `Micelio.Storage.Error`."
  @spec put_if_match!(key, iodata, String.t(), opts) :: key
  def put_if_match!(key, content, etag, opts \\ []),
    do: Error.unwrap!(put_if_match(key, content, etag, opts), :put_if_match, key, opts)

  @doc "Like `get/2`, but returns the content or raises `Micelio.Storage.Error`."
  @spec get!(key, opts) :: binary
  def get!(key, opts \\ []), do: Error.unwrap!(get(key, opts), :get, key, opts)

  @doc "Like `get_with_metadata/2`, but returns the map or raises `Micelio.Storage.Error`."
  @spec get_with_metadata!(key, opts) :: map
  def get_with_metadata!(key, opts \\ []),
    do: Error.unwrap!(get_with_metadata(key, opts), :get_with_metadata, key, opts)

  @doc "Like `head/2`, but returns the metadata or raises `Micelio.Storage.Error`."
  @spec head!(key, opts) :: metadata
  def head!(key, opts \\ []), do: Error.unwrap!(head(key, opts), :head, key, opts)

  @doc "Like `list/2`, but returns the keys or raises `Micelio.Storage.Error`."
  @spec list!(String.t(), opts) :: [key]
  def list!(prefix \\ "", opts \\ []), do: Error.unwrap!(list(prefix, opts), :list, prefix, opts)

  @doc "Like `delete/2`, but returns the key or raises `Micelio.Storage.Error`."
  @spec delete!(key, opts) :: key
  def delete!(key, opts \\ []), do: Error.unwrap!(delete(key, opts), :delete, key, opts)

  @doc """
  Like `copy/3`, but returns the destination key or raises `Micelio.Storage.Error`.

      iex> Micelio.Storage.put!("c/src", "x")
      iex> Micelio.Storage.copy!("c/src", "c/dst")
      "c/dst"
  """
  @spec copy!(key, key, opts) :: key
  def copy!(source_key, destination_key, opts \\ []),
    do: Error.unwrap!(copy(source_key, destination_key, opts), :copy, source_key, opts)

  @doc """
  Like `delete_many/2`, but returns the deleted keys or raises
  `Micelio.Storage.Error` (whose reason is `{:partial, deleted, failures}`
  when some keys failed).

      iex> Micelio.Storage.put!("dm/a", "x")
      iex> Micelio.Storage.delete_many!(["dm/a"])
      ["dm/a"]
  """
  @spec delete_many!([key], opts) :: [key]
  def delete_many!(keys, opts \\ []),
    do: Error.unwrap!(delete_many(keys, opts), :delete_many, nil, opts)

  # Resolves the handle, then runs `fun` on it inside the operation's
  # telemetry events (when :telemetry is loaded).
  defp run(op, key, opts, fun, bytes \\ fn _ -> 0 end)

  defp run(op, key, opts, fun, bytes) when is_binary(key) do
    with {:ok, handle} <- Lookup.handle(opts),
         do: Telemetry.observe(op, key, handle, fn -> fun.(handle) end, bytes)
  end

  defp run(_op, key, _opts, _fun, _bytes), do: {:error, {:invalid_key, key}}

  defp with_handle(key, opts, fun) when is_binary(key) do
    with {:ok, handle} <- Lookup.handle(opts), do: fun.(handle)
  end

  defp with_handle(key, _opts, _fun), do: {:error, {:invalid_key, key}}

  defp below_ram(op, handle, key, with_meta) do
    if Telemetry.enabled?(),
      do: Telemetry.below_ram(op, handle, key, with_meta),
      else: Store.below_ram(handle, key, with_meta)
  end

  @doc """
  Makes the next call of every configuration read the environment again.

  Application config is checked on every call. Environment variables
  (`STORAGE_*`, `S3_*`, `AWS_*`) are re-read every 250 ms by a background
  tick, which keeps them off the hot path; call `reload/0` after `System.put_env/2`
  when a change must apply to the very next call (tests do).

      iex> Micelio.Storage.reload()
      :ok
  """
  @spec reload() :: :ok
  def reload, do: Resolved.reset()

  @doc """
  Resolves the configuration once and builds its store, for reuse: pass the
  handle to any function in place of the options.

  The store behind a handle is the same one the options would reach (one per
  configuration), so a handle and plain calls share caches and connections.

      iex> {:ok, storage} = Micelio.Storage.open(backend: :local)
      iex> {:ok, _} = Micelio.Storage.put("h.txt", "via a handle", storage)
      iex> {:ok, _app_config} = Micelio.Storage.open()
      iex> Micelio.Storage.get("h.txt", storage)
      {:ok, "via a handle"}
  """
  @spec open(keyword() | Handle.t()) :: {:ok, Handle.t()} | {:error, reason}
  def open(opts \\ [])

  def open(%Handle{} = handle), do: {:ok, handle}

  def open(opts), do: Lookup.handle(opts)

  @doc """
  What the store does beyond the operations every backend has (get, head,
  the puts, delete, list, copy, streams and files), as the backend
  declares it:

  - `presigned_urls`: `presigned_url/2` works;
  - `public_urls`: `public_url/2` names a URL a browser can fetch;
  - `incomplete_uploads`: multipart uploads left behind can be listed and
    aborted (`Micelio.Storage.S3.abort_incomplete_uploads/2`);
  - `server_side_copy`: `copy/3` moves no bytes through the BEAM;
  - `read_cache`: reads are served from a cache in front of the store;
  - `object_tags`: puts take `storage_class:`, `acl:` and `tags:`, and
    `Micelio.Storage.S3.get_tags/2` reads the tags.

      iex> Micelio.Storage.capabilities(backend: :memory)
      {:ok, %{presigned_urls: false, public_urls: false, incomplete_uploads: false,
              server_side_copy: true, read_cache: false, object_tags: false}}
  """
  @spec capabilities(opts) :: {:ok, %{atom() => boolean()}} | {:error, reason}
  def capabilities(opts \\ []) do
    with {:ok, %Handle{store: store}} <- Lookup.handle(opts),
         do: {:ok, Micelio.Storage.Native.store_capabilities(store)}
  end

  @doc """
  The counters of each tier of a tiered store: hits, misses, bytes and
  evictions. See `Micelio.Storage.Tiered.stats/1`.

      iex> {:ok, %{origin: %{fetches: _}}} = Micelio.Storage.stats(backend: :tiered)
  """
  @spec stats(opts) :: {:ok, map()} | {:error, reason}
  def stats(opts \\ []), do: Micelio.Storage.Tiered.stats(opts)

  @doc """
  Checks that the configured store really works, within the call's
  `:timeout`, by a round trip:

    * local: writes, reads and deletes a probe object under the reserved
      prefix `.micelio-health/`;
    * S3: a HEAD of the bucket, so the endpoint answers, the credentials are
      accepted (`{:error, {:forbidden, code}}` otherwise) and the bucket
      exists (`{:error, {:no_such_bucket, bucket}}`);
    * tiered: the origin, then a probe file in the disk tier, then the CDN
      (any HTTP answer) when `cdn_base_url` is set;
    * memory: always healthy.

  Returns `:ok` or `{:error, reason}`. Call it from a readiness endpoint:

      get "/ready", fn conn ->
        case Micelio.Storage.health(timeout: 2_000) do
          :ok -> send_resp(conn, 200, "ok")
          {:error, reason} -> send_resp(conn, 503, inspect(reason))
        end
      end

      iex> Micelio.Storage.health()
      :ok
  """
  @spec health(opts) :: :ok | {:error, reason}
  def health(opts \\ []) do
    with {:ok, handle} <- Lookup.handle(opts),
         do:
           Telemetry.observe(:health, nil, handle, fn -> Store.run(handle, Operation.health()) end)
  end

  defp read_size({:ok, bin}) when is_binary(bin), do: byte_size(bin)
  defp read_size({:ok, bin, _meta}) when is_binary(bin), do: byte_size(bin)
  defp read_size(_), do: 0

  @doc """
  Uploads the file at `path` under `key` without reading it into memory.

  On S3, files from `s3_multipart_threshold` (16 MiB) on go up as a
  multipart upload, `s3_parts_in_flight` parts of `s3_part_size` at a time,
  each with its CRC-32; a failure, a timeout or the caller's death aborts
  the upload, so no parts are left behind. On local the file is copied in
  the kernel into a temp file and renamed: the key holds the old content or
  the new, never a part. Takes the object options of `put/3`
  (`:content_type`, `:metadata`, ...), and `:progress` and
  `:transfer_timeout` (see `Micelio.Storage.ObjectOptions`).

      iex> path = Path.join(System.tmp_dir!(), "micelio-doc-upload.bin")
      iex> File.write!(path, "file content")
      iex> Micelio.Storage.put_file("uploads/doc.bin", path, content_type: "application/pdf")
      {:ok, "uploads/doc.bin"}
      iex> Micelio.Storage.head!("uploads/doc.bin").content_type
      "application/pdf"
  """
  @spec put_file(key, Path.t(), opts) :: {:ok, key} | {:error, reason}
  def put_file(key, path, opts \\ [])

  def put_file(key, path, opts) when is_binary(path) do
    transfer(:put_file, key, opts, fn handle, attrs, xfer ->
      case Micelio.Storage.Transfer.put_file(handle, key, path, attrs, xfer) do
        {:ok, bytes} -> {:moved, bytes, {:ok, key}}
        error -> error
      end
    end)
  end

  def put_file(_key, path, _opts),
    do:
      {:error,
       {:invalid_config, :path, "expected a string, got #{Micelio.Storage.Config.shape(path)}"}}

  @doc ~S"""
  Uploads what `enumerable` yields (binaries or iodata) under `key`,
  holding only the parts in flight and the chunk being read: a
  `File.stream!/3`, a `Stream` of generated rows, a Plug upload's body.

  Stores exactly `IO.iodata_to_binary(Enum.to_list(enumerable))`, for any
  `Enumerable`: also those that hand their last element as they halt
  (`Stream.take/2`, a `File.stream!/3` cut short, hand-written ones). A
  chunk that is not iodata is `{:error, {:invalid_config, :content, _}}`.

  Takes the same options as `put_file/3`. If the enumerable raises, the
  upload is aborted and the exception re-raised.

      iex> rows = Stream.map(1..3, &"row #{&1}\n")
      iex> Micelio.Storage.put_stream("exports/rows.csv", rows)
      {:ok, "exports/rows.csv"}
      iex> Micelio.Storage.get("exports/rows.csv")
      {:ok, "row 1\nrow 2\nrow 3\n"}
  """
  @spec put_stream(key, Enumerable.t(), opts) :: {:ok, key} | {:error, reason}
  def put_stream(key, enumerable, opts \\ []) do
    transfer(:put_stream, key, opts, fn handle, attrs, xfer ->
      case Micelio.Storage.Transfer.put_stream(handle, key, enumerable, attrs, xfer) do
        {:ok, bytes} -> {:moved, bytes, {:ok, key}}
        error -> error
      end
    end)
  end

  @doc """
  Downloads `key` to the file at `path`, which appears whole or not at all
  (it is written beside `path` and renamed). Returns the object's metadata.

  On S3 the object is read in `s3_part_size` ranges, `s3_parts_in_flight`
  at a time, and checked against the CRC-32 the server keeps; a mismatch
  is `{:error, {:checksum_mismatch, expected, got}}` and leaves no file.
  On local the copy is done in the kernel. Takes `:progress` and
  `:transfer_timeout`.

      iex> Micelio.Storage.put!("reports/q1.txt", "q1")
      iex> path = Path.join(System.tmp_dir!(), "micelio-doc-q1.txt")
      iex> {:ok, %{size: 2}} = Micelio.Storage.get_file("reports/q1.txt", path)
      iex> File.read!(path)
      "q1"
  """
  @spec get_file(key, Path.t(), opts) :: {:ok, metadata} | {:error, reason}
  def get_file(key, path, opts \\ [])

  def get_file(key, path, opts) when is_binary(path) do
    transfer(:get_file, key, opts, fn handle, _attrs, xfer ->
      case Micelio.Storage.Transfer.get_file(handle, key, path, xfer) do
        {:ok, meta} ->
          meta = Metadata.from_native(meta)
          {:moved, meta.size, {:ok, meta}}

        error ->
          error
      end
    end)
  end

  def get_file(_key, path, _opts),
    do:
      {:error,
       {:invalid_config, :path, "expected a string, got #{Micelio.Storage.Config.shape(path)}"}}

  @doc ~S"""
  A lazy stream of the object's content, in chunks of up to 1 MiB, read a
  chunk or two ahead of the consumer. Takes `range: {offset, length}`.
  Like `File.stream!/3`, a failure (a missing key, a network error part-way,
  the object replaced during the read: `:changed`) raises
  `Micelio.Storage.Error`.

  `:timeout` bounds each wait for the store, not the time the consumer
  takes between chunks: a Phoenix controller may stream to a slow client
  for as long as it needs (`:transfer_timeout` bounds the whole when set).
  On S3, a connection the server closed while the consumer was away is
  resumed with a Range request from the next byte.

      iex> Micelio.Storage.put!("logs/app.log", "line 1\nline 2\n")
      iex> Micelio.Storage.stream("logs/app.log") |> Enum.join()
      "line 1\nline 2\n"
      iex> Micelio.Storage.stream("logs/app.log", range: {7, nil}) |> Enum.join()
      "line 2\n"
  """
  @spec stream(key, opts) :: Enumerable.t()
  def stream(key, opts \\ []) do
    {object, storage_opts} = ObjectOptions.split(opts)

    setup =
      with true <- is_binary(key) || {:error, {:invalid_key, key}},
           {:ok, range} <- ObjectOptions.range(object),
           {:ok, limit} <- ObjectOptions.transfer_timeout(object),
           {:ok, storage_opts} <- Lookup.storage(object, storage_opts),
           {:ok, handle} <- Lookup.handle(storage_opts),
           do: {:ok, handle, range, limit}

    case setup do
      {:ok, handle, range, limit} ->
        Micelio.Storage.Transfer.stream(
          handle,
          key,
          range,
          %{limit: limit},
          &Metadata.from_native/1
        )

      {:error, reason} ->
        raise Error, reason: reason, operation: :stream, key: key
    end
  end

  @doc ~S"""
  The same as `stream/2`, which already raises `Micelio.Storage.Error` on
  any failure (as `File.stream!/3` does); here for symmetry with the other
  bang functions.

      iex> Micelio.Storage.put!("notes.txt", "abc")
      iex> Micelio.Storage.stream!("notes.txt") |> Enum.join()
      "abc"
  """
  @spec stream!(key, opts) :: Enumerable.t()
  def stream!(key, opts \\ []), do: stream(key, opts)

  @doc """
  One level of the keys under `prefix`, like a directory listing (S3's
  delimiter `/`): `keys` directly under it and `prefixes` for everything
  deeper (each a full prefix ending in `/`), both sorted.

      iex> for k <- ~w(docs/a.md docs/img/x.png docs/img/y.png docs/api/v1.md), do: Micelio.Storage.put!(k, "x")
      iex> Micelio.Storage.list_with_delimiter("docs/")
      {:ok, %{keys: ["docs/a.md"], prefixes: ["docs/api/", "docs/img/"]}}
  """
  @spec list_with_delimiter(String.t(), opts) ::
          {:ok, %{keys: [key], prefixes: [String.t()]}} | {:error, reason}
  def list_with_delimiter(prefix \\ "", opts \\ [])

  def list_with_delimiter(prefix, opts) when is_binary(prefix) do
    run(:list_with_delimiter, prefix, opts, fn handle ->
      case Store.run(handle, Operation.list_level(prefix)) do
        {:ok, {keys, prefixes}} -> {:ok, %{keys: keys, prefixes: prefixes}}
        error -> error
      end
    end)
  end

  def list_with_delimiter(prefix, _opts), do: {:error, {:invalid_prefix, prefix}}

  @doc "Like `list_with_delimiter/2`, but returns the map or raises `Micelio.Storage.Error`."
  @spec list_with_delimiter!(String.t(), opts) :: %{keys: [key], prefixes: [String.t()]}
  def list_with_delimiter!(prefix \\ "", opts \\ []),
    do: Error.unwrap!(list_with_delimiter(prefix, opts), :list_with_delimiter, prefix, opts)

  @doc ~S"""
  A lazy stream of every key under `prefix`, in `list/2`'s order, fetched a
  page at a time as it is consumed (`:page_size` keys, default 1,000): a
  million keys hold one page in memory, not a million. On local a page is
  read one directory at a time. On S3 pages follow the server's
  continuation tokens, so nothing is skipped or repeated; the order is the
  byte order `list/2` sorts by on AWS S3, R2 and MinIO, while SeaweedFS
  lists directory by directory (`list/2` sorts the whole listing itself).
  A failure raises `Micelio.Storage.Error`.

      iex> for i <- 1..3, do: Micelio.Storage.put!("sk/#{i}", "x")
      iex> Micelio.Storage.stream_keys("sk/", page_size: 2) |> Enum.to_list()
      ["sk/1", "sk/2", "sk/3"]
  """
  @spec stream_keys(String.t(), opts) :: Enumerable.t()
  def stream_keys(prefix \\ "", opts \\ []) do
    {page_size, opts} =
      if Keyword.keyword?(opts), do: Keyword.pop(opts, :page_size, 1000), else: {1000, opts}

    unless is_integer(page_size) and page_size > 0,
      do:
        raise(Error,
          reason: {:invalid_config, :page_size, "expected a positive integer"},
          operation: :stream_keys,
          key: prefix
        )

    unless is_binary(prefix),
      do: raise(Error, reason: {:invalid_prefix, prefix}, operation: :stream_keys, key: prefix)

    Stream.resource(
      fn -> open_key_stream(prefix, opts) end,
      fn
        %{cursor: :done} = state ->
          {:halt, state}

        %{cursor: {_, after_key}} = state ->
          case Store.run(state.handle, Operation.list_page(prefix, after_key, page_size)) do
            {:ok, {keys, cursor}} ->
              next = if cursor, do: {:more, cursor}, else: :done
              {keys, %{state | cursor: next, keys: state.keys + length(keys)}}

            {:error, reason} ->
              key_stream_fail!(state.span, reason, prefix, true)
          end
      end,
      fn state -> Telemetry.stream_stop(state.span, :keys, state.keys) end
    )
  end

  # The handle is resolved once, when enumeration begins, and serves every
  # page.
  defp open_key_stream(prefix, opts) do
    case Lookup.handle(opts) do
      {:ok, handle} ->
        %{
          handle: handle,
          cursor: {:start, nil},
          keys: 0,
          span: Telemetry.stream_start(:stream_keys, handle, prefix)
        }

      {:error, reason} ->
        raise Error, reason: reason, operation: :stream_keys, key: prefix
    end
  end

  defp key_stream_fail!(span, reason, prefix, stop_follows?) do
    error = Error.exception(reason: reason, operation: :stream_keys, key: prefix)
    {:current_stacktrace, [_ | stack]} = Process.info(self(), :current_stacktrace)
    Telemetry.stream_raised(span, :error, error, stack, stop_follows?)
    raise error
  end

  @doc """
  The same as `stream_keys/2`, which already raises
  `Micelio.Storage.Error` when a page cannot be read.

      iex> Micelio.Storage.put!("batch/1", "x")
      iex> Micelio.Storage.stream_keys!("batch/") |> Enum.to_list()
      ["batch/1"]
  """
  @spec stream_keys!(String.t(), opts) :: Enumerable.t()
  def stream_keys!(prefix \\ "", opts \\ []), do: stream_keys(prefix, opts)

  @doc """
  Stores `content` under its SHA-256: the key is
  `<prefix>sha256:<64 lowercase hex>` (`prefix:` defaults to `""`), as in
  `artifacts/sha256:...` or `cache/builds/sha256:...`.

  `content` is iodata, `{:file, path}` (hashed while it is read, then
  uploaded with `put_file/3`) or `{:stream, enumerable}` (hashed while it
  is spooled to a temp file, then uploaded). The spool is a file of the
  whole content's size in `System.tmp_dir!/0` (`TMPDIR`), made with a
  random name that no other file has (mode 0600), and removed afterwards:
  put `TMPDIR` on a disk with room for your largest stream. Nothing is uploaded when the
  key already holds an object of the same size; many processes putting the
  same content at once are safe (each write is atomic and writes the same
  bytes). Takes the object options of `put/3`.

      iex> {:ok, key} = Micelio.Storage.put_content_addressed("hello", prefix: "artifacts/")
      iex> key
      "artifacts/sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
  """
  @spec put_content_addressed(iodata | {:file, Path.t()} | {:stream, Enumerable.t()}, opts) ::
          {:ok, key} | {:error, reason}
  def put_content_addressed(content, opts \\ []) do
    {prefix, opts} =
      if Keyword.keyword?(opts), do: Keyword.pop(opts, :prefix, ""), else: {"", opts}

    Micelio.Storage.ContentAddressed.put(content, prefix, opts)
  end

  @doc "Like `put_content_addressed/2`, but returns the key or raises `Micelio.Storage.Error`."
  @spec put_content_addressed!(iodata | {:file, Path.t()} | {:stream, Enumerable.t()}, opts) ::
          key
  def put_content_addressed!(content, opts \\ []),
    do: Error.unwrap!(put_content_addressed(content, opts), :put_content_addressed, nil, opts)

  @doc """
  The URL a browser can fetch `key` at without credentials: the CDN's
  (`cdn_base_url`, on the tiered backend) when one is set, else the
  object's URL on the S3 endpoint (for public buckets). The local backend
  has none: `{:error, {:invalid_config, :backend, _}}`.

      iex> Micelio.Storage.public_url("img/logo.png",
      ...>   backend: :s3, s3_bucket: "assets", s3_region: "eu-west-1",
      ...>   s3_access_key_id: "AKID", s3_secret_access_key: "secret")
      {:ok, "https://assets.s3.eu-west-1.amazonaws.com/img/logo.png"}
  """
  @spec public_url(key, opts) :: {:ok, String.t()} | {:error, reason}
  def public_url(key, opts \\ []) do
    run(:public_url, key, opts, fn handle -> Store.run(handle, Operation.public_url(key)) end)
  end

  @doc "Like `public_url/2`, but returns the URL or raises `Micelio.Storage.Error`."
  @spec public_url!(key, opts) :: String.t()
  def public_url!(key, opts \\ []),
    do: Error.unwrap!(public_url(key, opts), :public_url, key, opts)

  @doc "Like `put_file/3`, but returns the key or raises `Micelio.Storage.Error`."
  @spec put_file!(key, Path.t(), opts) :: key
  def put_file!(key, path, opts \\ []),
    do: Error.unwrap_file!(put_file(key, path, opts), :put_file, key, opts, path)

  @doc "Like `put_stream/3`, but returns the key or raises `Micelio.Storage.Error`."
  @spec put_stream!(key, Enumerable.t(), opts) :: key
  def put_stream!(key, enumerable, opts \\ []),
    do: Error.unwrap!(put_stream(key, enumerable, opts), :put_stream, key, opts)

  @doc "Like `get_file/3`, but returns the metadata or raises `Micelio.Storage.Error`."
  @spec get_file!(key, Path.t(), opts) :: metadata
  def get_file!(key, path, opts \\ []),
    do: Error.unwrap_file!(get_file(key, path, opts), :get_file, key, opts, path)

  # A transfer: object options split off, the handle resolved, inside the
  # operation's telemetry span.
  defp transfer(op, key, opts, fun) do
    {object, opts} = ObjectOptions.split(opts)

    with {:ok, attrs} <- ObjectOptions.attributes(object),
         {:ok, progress} <- ObjectOptions.progress(object),
         {:ok, limit} <- ObjectOptions.transfer_timeout(object),
         {:ok, opts} <- Lookup.storage(object, opts) do
      run(op, key, opts, fn handle -> fun.(handle, attrs, %{progress: progress, limit: limit}) end)
    end
  end
end
