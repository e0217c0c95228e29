defmodule Micelio.Storage.ContentAddressed do
  @moduledoc false
  # `Micelio.Storage.put_content_addressed/2`: the key is the content's
  # SHA-256, so the same content always lands on the same key. Content is
  # hashed as it is read (files and streams in 1 MiB chunks); a key that
  # already holds an object of the same size is not uploaded again.

  alias Micelio.Storage
  alias Micelio.Storage.Chunks

  @chunk 1_048_576

  def put(content, prefix, opts) when is_binary(prefix) do
    with {:ok, digest, size, upload} <- hash(content) do
      key = prefix <> "sha256:" <> Base.encode16(digest, case: :lower)

      try do
        case Storage.head(key, storage_only(opts)) do
          {:ok, %{size: ^size}} -> {:ok, key}
          {:ok, _other_size} -> upload.(key, opts)
          {:error, :not_found} -> upload.(key, opts)
          {:error, _} = error -> error
        end
      after
        cleanup(content, upload)
      end
    end
  end

  def put(_content, prefix, _opts),
    do:
      {:error,
       {:invalid_config, :prefix,
        "expected a string, got #{Micelio.Storage.Config.shape(prefix)}"}}

  # head/2 takes no object options (content type, metadata...).
  defp storage_only(opts) do
    case Micelio.Storage.ObjectOptions.split(opts) do
      {object, []} -> Keyword.take(object, [:storage])
      {_object, rest} -> rest
    end
  end

  defp hash({:file, path}) when is_binary(path) do
    case File.open(path, [:read, :raw, :binary], &digest_device/1) do
      {:ok, {digest, size}} ->
        {:ok, digest, size, fn key, opts -> Storage.put_file(key, path, opts) end}

      {:error, posix} ->
        {:error, {:io, posix}}
    end
  end

  defp hash({:stream, enumerable}) do
    # A random name, opened exclusively (never through a planted file or
    # symlink), readable by us alone.
    spool =
      Path.join(
        System.tmp_dir!(),
        "micelio-cas-" <> Base.url_encode64(:crypto.strong_rand_bytes(12), padding: false)
      )

    result =
      File.open(spool, [:write, :raw, :binary, :exclusive], fn f ->
        File.chmod(spool, 0o600)
        spool_chunks(f, Chunks.open(enumerable), :crypto.hash_init(:sha256), 0)
      end)

    case result do
      {:ok, {:ok, h, size}} ->
        upload = fn key, opts -> Storage.put_file(key, spool, opts) end
        Process.put({__MODULE__, upload}, spool)
        {:ok, :crypto.hash_final(h), size, upload}

      {:ok, {:error, _} = error} ->
        File.rm(spool)
        error

      {:error, posix} ->
        File.rm(spool)
        {:error, {:io, posix}}
    end
  end

  defp hash(iodata) do
    digest = :crypto.hash(:sha256, iodata)
    size = IO.iodata_length(iodata)
    {:ok, digest, size, fn key, opts -> Storage.put(key, iodata, opts) end}
  rescue
    ArgumentError ->
      {:error,
       {:invalid_config, :content, "expected iodata, {:file, path} or {:stream, enumerable}"}}
  end

  # Written a chunk at a time through the same walk as put_stream, so an
  # enumerable that hands its last element with `:halted` keeps it.
  defp spool_chunks(f, cursor, h, n) do
    case Chunks.next(cursor) do
      {:ok, chunk, cursor} ->
        case Chunks.to_binary(chunk) do
          {:ok, bytes} ->
            :ok = IO.binwrite(f, bytes)
            spool_chunks(f, cursor, :crypto.hash_update(h, bytes), n + byte_size(bytes))

          :error ->
            Chunks.close(cursor)

            {:error,
             {:invalid_config, :content,
              "the enumerable yielded #{Micelio.Storage.Config.shape(chunk)}, not iodata"}}
        end

      :done ->
        {:ok, h, n}
    end
  end

  defp digest_device(f, h \\ :crypto.hash_init(:sha256), n \\ 0) do
    case IO.binread(f, @chunk) do
      :eof -> {:crypto.hash_final(h), n}
      {:error, reason} -> raise File.Error, reason: reason, action: "read", path: "content"
      data -> digest_device(f, :crypto.hash_update(h, data), n + byte_size(data))
    end
  end

  defp cleanup({:stream, _}, upload) do
    case Process.delete({__MODULE__, upload}) do
      nil -> :ok
      spool -> File.rm(spool)
    end
  end

  defp cleanup(_content, _upload), do: :ok
end
