if Code.ensure_loaded?(Phoenix.LiveView) do
  defmodule Micelio.Storage.LiveView do
    @moduledoc """
    Phoenix LiveView uploads into a store, two ways:

    - **External uploads**, straight from the browser to S3:
      `presign_upload/3` answers `allow_upload(..., external: ...)` with a
      POST policy (S3 enforces the size limit and the content type) or, for
      providers without POST uploads (Cloudflare R2), a signed PUT. The
      browser side is `priv/static/micelio_storage_uploaders.js`:

          // app.js
          import {MicelioStorageUploaders} from "../../deps/micelio_storage/priv/static/micelio_storage_uploaders.js"
          let liveSocket = new LiveSocket("/live", Socket, {uploaders: MicelioStorageUploaders, params: ...})

          # the LiveView
          allow_upload(socket, :avatar,
            accept: ~w(.png .jpg),
            max_file_size: 5_000_000,
            external: &Micelio.Storage.LiveView.presign_upload(&1, &2, store: MyApp.Storage)
          )

      The bucket needs a CORS rule that lets the app's origin POST (or PUT):
      see the README's "Uploads from the browser".

    - **Channel uploads streamed into the store**,
      `Micelio.Storage.LiveView.UploadWriter`: chunks go into a multipart
      upload as they arrive, without a temporary file.

    `finalize_upload/2` moves an uploaded (staging) object to its
    content-addressed key.
    """

    @doc """
    The `meta` of an external upload for `entry`, as `allow_upload/3`'s
    `:external` function returns it: `{:ok, meta, socket}`.

    `meta.uploader` is `"MicelioS3Post"` (a POST policy: `meta.url` and
    `meta.fields`) or `"MicelioS3Put"` (a presigned PUT: `meta.url` and
    `meta.headers`); `meta.key` is the key the object lands at.

    Options:

      * `:store` (required): a store module or storage options (S3);
      * `:key`: a function of the entry returning the key (default
        `"uploads/<entry uuid>/<client name>"`);
      * `:max_file_size`: the largest upload S3 accepts (default: the
        upload's `max_file_size`, else the size the client announced);
      * `:uploader`: `:post`, `:put` or `:auto` (default: POST, except on
        providers without POST uploads, such as Cloudflare R2);
      * `:expires_in`: seconds the signature stays valid (default 600).

    The content type is the one the browser announced, bound into the
    signature. A failure is `{:error, %{reason: reason}, socket}`, which
    LiveView reports on the entry.
    """
    @spec presign_upload(Phoenix.LiveView.UploadEntry.t(), Phoenix.LiveView.Socket.t(), keyword()) ::
            {:ok, map(), Phoenix.LiveView.Socket.t()}
            | {:error, map(), Phoenix.LiveView.Socket.t()}
    def presign_upload(entry, socket, opts) do
      store = Keyword.fetch!(opts, :store)
      key = key_for(entry, opts)
      type = if entry.client_type in [nil, ""], do: nil, else: entry.client_type
      expires_in = Keyword.get(opts, :expires_in, 600)

      result =
        with {:ok, handle} <- Micelio.Storage.Lookup.store(store) do
          case uploader(handle, Keyword.get(opts, :uploader, :auto)) do
            :post ->
              post = [
                storage: handle,
                content_length_range: {0, max_size(entry, socket, opts)},
                content_type: type,
                expires_in: expires_in
              ]

              with {:ok, %{url: url, fields: fields}} <-
                     Micelio.Storage.presigned_post(key, Enum.reject(post, &is_nil(elem(&1, 1)))) do
                {:ok, %{uploader: "MicelioS3Post", key: key, url: url, fields: fields}}
              end

            :put ->
              put = [storage: handle, method: :put, content_type: type, expires_in: expires_in]

              with {:ok, url} <-
                     Micelio.Storage.presigned_url(key, Enum.reject(put, &is_nil(elem(&1, 1)))) do
                headers = if type, do: %{"content-type" => type}, else: %{}
                {:ok, %{uploader: "MicelioS3Put", key: key, url: url, headers: headers}}
              end
          end
        end

      case result do
        {:ok, meta} -> {:ok, meta, socket}
        {:error, reason} -> {:error, %{reason: reason}, socket}
      end
    end

    defp key_for(entry, opts) do
      case Keyword.get(opts, :key) do
        fun when is_function(fun, 1) -> fun.(entry)
        nil -> "uploads/#{entry.uuid}/#{safe_name(entry.client_name)}"
      end
    end

    # A client's file name as one key segment: no slashes, no control
    # characters, never "." or "..".
    defp safe_name(name) do
      name = String.replace(name || "", ~r/[\/\\\x00-\x1f\x7f]/u, "_")
      if name in ["", ".", ".."], do: "file", else: name
    end

    defp max_size(entry, socket, opts) do
      Keyword.get(opts, :max_file_size) ||
        get_in(socket.assigns, [:uploads, entry.upload_config, Access.key(:max_file_size)]) ||
        entry.client_size
    end

    # Where the provider takes no POST uploads (Cloudflare R2), a signed PUT.
    defp uploader(handle, :auto),
      do: if(Micelio.Storage.S3.post_uploads?(handle), do: :post, else: :put)

    defp uploader(_handle, choice) when choice in [:post, :put], do: choice

    @doc """
    Moves an uploaded object from `staging_key` to its content-addressed key
    (`<prefix>sha256:<hex>`, as `Micelio.Storage.put_content_addressed/2`
    names it) and deletes the staging key: `{:ok, key}`.

    The content is read once, in chunks, to hash it. It is checked first:
    `expected_size:` (the size the client announced) and `sha256:` (a
    checksum the client computed, in hex) when given; a mismatch is
    `{:error, {:checksum_mismatch, expected, got}}` (or `:size` in place of
    the checksums) and nothing moves. The copy is made only if the key is
    not there yet (an identical object may be); then the staging key goes.

    Options: `:prefix` of the final key, and storage options.
    """
    @spec finalize_upload(String.t(), keyword()) :: {:ok, String.t()} | {:error, term()}
    def finalize_upload(staging_key, opts \\ []) do
      {own, storage} = Keyword.split(opts, [:prefix, :expected_size, :sha256])

      with {:ok, meta} <- Micelio.Storage.head(staging_key, storage),
           :ok <- check_size(meta.size, own[:expected_size]),
           {:ok, digest} <- digest(staging_key, storage),
           :ok <- check_digest(digest, own[:sha256]),
           key = "#{own[:prefix] || ""}sha256:#{digest}",
           {:ok, _} <- copy_if_absent(staging_key, key, storage),
           {:ok, _} <- Micelio.Storage.delete(staging_key, storage) do
        {:ok, key}
      end
    end

    defp check_size(_size, nil), do: :ok
    defp check_size(size, size), do: :ok

    defp check_size(size, expected),
      do: {:error, {:checksum_mismatch, "size:#{expected}", "size:#{size}"}}

    defp digest(key, storage) do
      hash =
        key
        |> Micelio.Storage.stream(storage)
        |> Enum.reduce(:crypto.hash_init(:sha256), &:crypto.hash_update(&2, &1))
        |> :crypto.hash_final()

      {:ok, Base.encode16(hash, case: :lower)}
    rescue
      e in Micelio.Storage.Error -> {:error, e.reason}
    end

    defp check_digest(_digest, nil), do: :ok

    defp check_digest(digest, expected) when is_binary(expected) do
      if String.downcase(expected) == digest,
        do: :ok,
        else: {:error, {:checksum_mismatch, String.downcase(expected), digest}}
    end

    defp copy_if_absent(from, to, storage) do
      case Micelio.Storage.head(to, storage) do
        {:ok, _} -> {:ok, to}
        {:error, :not_found} -> Micelio.Storage.copy(from, to, storage)
        error -> error
      end
    end
  end
end
