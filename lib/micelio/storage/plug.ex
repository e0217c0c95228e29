if Code.ensure_loaded?(Plug.Conn) do
  defmodule Micelio.Storage.Plug do
    @moduledoc """
    Serves stored objects over HTTP, as `Plug.Static` serves files: GET and
    HEAD, strong ETags with `If-None-Match`, `If-Modified-Since`, one `Range`
    (206, `If-Range`, 416), `Content-Type` from the object's metadata, a
    `Content-Disposition` with an RFC 6266 `filename*`, and `Cache-Control`.

        # router.ex: GET /files/sessions/1/a.txt serves the key "sessions/1/a.txt"
        forward "/files", Micelio.Storage.Plug, store: MyApp.Storage

        # the key from a function, with an authorization hook
        forward "/downloads", Micelio.Storage.Plug,
          store: [backend: :s3, s3_bucket: "artifacts"],
          key: &MyAppWeb.Downloads.key/1,
          authorize: &MyAppWeb.Downloads.authorize/2,
          disposition: :attachment

    Options:

      * `:store` (required): a store module (`use Micelio.Storage`) or
        storage options (`[backend: :s3, ...]`);
      * `:prefix`: prepended to the joined `path_info` to make the key
        (default `""`);
      * `:key`: a function of the conn that returns the key, instead;
      * `:authorize`: `(conn, key) -> :ok | {:error, status}`, called before
        anything is read;
      * `:disposition`: `:inline` (default) or `:attachment`;
      * `:cache_control`: the `Cache-Control` value (default none);
        content-addressed keys (`sha256:<64 hex>`) always get
        `public, max-age=31536000, immutable`;
      * `:mode`: `:stream` (default) or `:redirect`, which answers 302 to the
        CDN URL (when `cdn_base_url` is set) or to a presigned GET
        (`:redirect_expires_in` seconds, default 300).

    Bodies stream from the store with backpressure: the client's pace is not
    a timeout. Local files and disk-tier hits go out with `sendfile` (a
    disk-tier copy is checked against its CRC-32 first). A failure after the
    headers are sent aborts the connection (the client sees a broken
    transfer, never a short body that ends cleanly) by raising
    `Micelio.Storage.Plug.AbortedError`. Methods other than GET and HEAD
    pass through untouched. A missing key is 404, a key the store refuses is
    400, any other store failure 502 (503 for a timeout).
    """
    @behaviour Plug

    import Plug.Conn

    alias Micelio.Storage.Plug.Responses

    @immutable "public, max-age=31536000, immutable"

    defmodule AbortedError do
      @moduledoc """
      Raised (in the connection's process) when a body fails after its
      headers were sent: the server closes the connection instead of ending
      the response, so the client cannot take a short body for a whole one.
      """
      defexception [:key, :reason]

      @impl true
      def message(%{key: key, reason: reason}),
        do: "aborted the response for #{inspect(key)}: #{inspect(reason)}"
    end

    @impl true
    def init(opts) do
      store =
        Keyword.get(opts, :store) || raise ArgumentError, "Micelio.Storage.Plug needs :store"

      unless is_atom(store) or is_list(store),
        do: raise(ArgumentError, ":store must be a store module or storage options")

      mode = Keyword.get(opts, :mode, :stream)
      disposition = Keyword.get(opts, :disposition, :inline)

      unless mode in [:stream, :redirect],
        do: raise(ArgumentError, ":mode must be :stream or :redirect, got #{inspect(mode)}")

      unless disposition in [:inline, :attachment],
        do: raise(ArgumentError, ":disposition must be :inline or :attachment")

      %{
        store: store,
        prefix: Keyword.get(opts, :prefix, ""),
        key: Keyword.get(opts, :key),
        authorize: Keyword.get(opts, :authorize),
        disposition: disposition,
        cache_control: Keyword.get(opts, :cache_control),
        mode: mode,
        redirect_expires_in: Keyword.get(opts, :redirect_expires_in, 300)
      }
    end

    @impl true
    def call(%Plug.Conn{method: method} = conn, opts) when method in ["GET", "HEAD"] do
      with {:ok, key} <- key(conn, opts),
           :ok <- authorize(conn, key, opts),
           {:ok, handle} <- Micelio.Storage.Lookup.store(opts.store) do
        case opts.mode do
          :stream -> serve(conn, key, handle, opts)
          :redirect -> redirect(conn, key, handle, opts)
        end
      else
        {:error, status} when is_integer(status) -> conn |> send_resp(status, "") |> halt()
        {:error, reason} -> failure(conn, reason)
      end
    end

    def call(conn, _opts), do: conn

    defp key(conn, %{key: fun}) when is_function(fun, 1), do: {:ok, fun.(conn)}

    # `path_info` holds the segments as sent, percent-encoded. A segment that
    # decodes to a `/` (or is not valid percent-encoding) would name another
    # key than its path says: refused, as Plug.Static refuses it.
    defp key(conn, %{prefix: prefix}) do
      segments =
        Enum.map(conn.path_info, fn segment ->
          try do
            URI.decode(segment)
          rescue
            ArgumentError -> "/"
          end
        end)

      if Enum.any?(segments, &String.contains?(&1, "/")),
        do: {:error, 400},
        else: {:ok, prefix <> Enum.join(segments, "/")}
    end

    defp authorize(_conn, _key, %{authorize: nil}), do: :ok

    defp authorize(conn, key, %{authorize: fun}) do
      case fun.(conn, key) do
        :ok -> :ok
        {:error, status} when is_integer(status) -> {:error, status}
        other -> raise ArgumentError, ":authorize returned #{inspect(other)}"
      end
    end

    ## Streaming mode

    defp serve(conn, key, handle, opts) do
      case Micelio.Storage.head(key, storage: handle) do
        {:ok, meta} -> respond(conn, key, meta, handle, opts)
        {:error, reason} -> failure(conn, reason)
      end
    end

    defp respond(conn, key, meta, handle, opts) do
      conn = put_object_headers(conn, key, meta, opts)

      case Responses.choose(conn.req_headers, meta) do
        :not_modified ->
          conn |> send_resp(304, "") |> halt()

        :unsatisfiable ->
          conn
          |> put_resp_header("content-range", "bytes */#{meta.size}")
          |> send_resp(416, "")
          |> halt()

        {:partial, first, last} ->
          conn
          |> put_resp_header("content-range", "bytes #{first}-#{last}/#{meta.size}")
          |> body(206, key, meta, {first, last - first + 1}, handle)

        :full ->
          body(conn, 200, key, meta, {0, meta.size}, handle)
      end
    end

    defp put_object_headers(conn, key, meta, opts) do
      conn
      |> put_resp_header("etag", ~s("#{meta.etag}"))
      |> put_resp_header("last-modified", Responses.http_date(meta.last_modified))
      |> put_resp_header("accept-ranges", "bytes")
      |> put_resp_content_type(meta.content_type || "application/octet-stream", nil)
      |> put_resp_header("x-content-type-options", "nosniff")
      |> put_resp_header(
        "content-disposition",
        Responses.content_disposition(opts.disposition, Path.basename(key))
      )
      |> maybe_header("content-encoding", meta.content_encoding)
      |> maybe_header("cache-control", cache_control(key, meta, opts))
    end

    defp cache_control(key, meta, opts) do
      if Responses.content_addressed?(key),
        do: @immutable,
        else: opts.cache_control || meta.cache_control
    end

    defp maybe_header(conn, _name, nil), do: conn
    defp maybe_header(conn, name, value), do: put_resp_header(conn, name, value)

    defp body(%Plug.Conn{method: "HEAD"} = conn, status, _key, _meta, {_, length}, _handle) do
      # No body, but the length the GET would have.
      conn
      |> put_resp_header("content-length", Integer.to_string(length))
      |> send_resp(status, "")
      |> halt()
    end

    defp body(conn, status, key, meta, {offset, length}, handle) do
      with :none <- local_file(handle, key, meta),
           :none <- disk_tier_file(handle, key, meta) do
        stream_body(conn, status, key, {offset, length}, handle)
      else
        {:ok, path} ->
          conn |> send_file(status, path, offset, length) |> halt()

        {:link, link, start} ->
          # A private hard link to the checked cache file: removed once sent.
          try do
            conn |> send_file(status, link, start + offset, length) |> halt()
          after
            File.rm(link)
          end
      end
    end

    # A disk-tier hit of a tiered store, when it is the object the headers
    # describe: sent with sendfile from a link the engine made to the file
    # whose CRC-32 it just checked.
    defp disk_tier_file(%{backend: :tiered, store: store}, key, meta) do
      case Micelio.Storage.Native.store_disk_file(store, key) do
        {:ok, link, start, native} ->
          cached = Micelio.Storage.Metadata.from_native(native)

          if cached.etag == meta.etag and cached.size == meta.size do
            {:link, link, start}
          else
            File.rm(link)
            :none
          end

        _miss ->
          :none
      end
    end

    defp disk_tier_file(_handle, _key, _meta), do: :none

    # A local object is sent with sendfile when the file is the object the
    # headers describe (same size), reached without a symlink.
    defp local_file(%{backend: :local, config: %{local_path: root}}, key, meta)
         when is_binary(root) do
      path = Path.join(root, key)

      with true <- no_symlink?(root, key),
           {:ok, %File.Stat{type: :regular, size: size}} when size == meta.size <-
             File.lstat(path) do
        {:ok, path}
      else
        _ -> :none
      end
    end

    defp local_file(_handle, _key, _meta), do: :none

    defp no_symlink?(root, key) do
      key
      |> Path.split()
      |> Enum.scan(root, &Path.join(&2, &1))
      |> Enum.all?(&match?({:ok, %File.Stat{type: type}} when type != :symlink, File.lstat(&1)))
    end

    defp stream_body(conn, status, key, {offset, length}, handle) do
      conn =
        conn
        |> put_resp_header("content-length", Integer.to_string(length))
        |> send_chunked(status)

      if length == 0 do
        halt(conn)
      else
        chunks = Micelio.Storage.stream(key, storage: handle, range: {offset, length})
        send_chunks(conn, key, chunks, length)
      end
    end

    # Sends exactly `length` bytes, or aborts: a read failure, a client gone,
    # or an object whose length changed under us never ends the response as
    # if it were whole.
    defp send_chunks(conn, key, chunks, length) do
      sent =
        try do
          Enum.reduce(chunks, {conn, 0}, fn chunk, {conn, sent} ->
            size = byte_size(chunk)

            if sent + size > length,
              do: raise(AbortedError, key: key, reason: :changed)

            case chunk(conn, chunk) do
              {:ok, conn} -> {conn, sent + size}
              {:error, reason} -> raise AbortedError, key: key, reason: {:client, reason}
            end
          end)
        rescue
          e in Micelio.Storage.Error ->
            reraise AbortedError, [key: key, reason: e.reason], __STACKTRACE__
        end

      case sent do
        {conn, ^length} -> halt(conn)
        {_conn, _short} -> raise AbortedError, key: key, reason: :changed
      end
    end

    ## Redirect mode

    defp redirect(conn, key, handle, opts) do
      with {:ok, url} <- redirect_url(key, handle, opts) do
        conn
        |> put_resp_header("location", url)
        |> put_resp_header("cache-control", "private, max-age=0")
        |> send_resp(302, "")
        |> halt()
      else
        {:error, reason} -> failure(conn, reason)
      end
    end

    defp redirect_url(key, %{config: config} = handle, opts) do
      if is_binary(config[:cdn_base_url]) do
        Micelio.Storage.public_url(key, storage: handle)
      else
        disposition = Responses.content_disposition(opts.disposition, Path.basename(key))

        Micelio.Storage.presigned_url(key,
          storage: handle,
          expires_in: opts.redirect_expires_in,
          response_content_disposition: disposition
        )
      end
    end

    ## Failures before any byte is sent

    defp failure(conn, reason) do
      status =
        case reason do
          :not_found -> 404
          {:invalid_key, _} -> 400
          {:unsafe_path, _} -> 400
          {:io, :enotdir} -> 404
          {:io, :eisdir} -> 404
          :timeout -> 503
          _ -> 502
        end

      conn |> send_resp(status, "") |> halt()
    end
  end
end
