if Code.ensure_loaded?(Phoenix.LiveView.UploadWriter) do
  defmodule Micelio.Storage.LiveView.UploadWriter do
    @moduledoc """
    A `Phoenix.LiveView.UploadWriter` that streams a channel upload into a
    store as its chunks arrive (a multipart upload on S3), without writing
    a temporary file or holding the whole file in memory.

        allow_upload(socket, :artifact,
          accept: :any,
          max_file_size: 2_000_000_000,
          writer: fn _name, entry, _socket ->
            {Micelio.Storage.LiveView.UploadWriter,
             store: MyApp.Storage, key: "uploads/\#{entry.uuid}"}
          end
        )

        # when the upload is done
        consume_uploaded_entries(socket, :artifact, fn %{key: key, size: size}, _entry ->
          {:ok, key}
        end)

    Options: `:store` (a store module or storage options) and `:key`
    (required). Each chunk is handed to an uploader process and
    `write_chunk/2` returns once it has taken it, so the channel reads the
    next chunk only when the store keeps up. `close(state, :done)` waits for
    the object to be complete; `close(state, :cancel)` (and an error) aborts
    the upload, and returns once no multipart upload of the key is left on
    the server.
    """
    @behaviour Phoenix.LiveView.UploadWriter

    @abort_wait_ms 10_000

    @impl true
    def init(opts) do
      key = Keyword.fetch!(opts, :key)
      store = Keyword.fetch!(opts, :store)

      with {:ok, handle} <- Micelio.Storage.Lookup.store(store) do
        parent = self()
        ref = make_ref()
        {pid, monitor} = spawn_monitor(fn -> upload(parent, ref, key, handle) end)

        {:ok,
         %{
           key: key,
           handle: handle,
           pid: pid,
           ref: ref,
           monitor: monitor,
           size: 0,
           result: nil
         }}
      end
    end

    @impl true
    def meta(%{key: key, size: size, result: result}) do
      %{key: key, size: size, etag: result && result[:etag]}
    end

    @impl true
    def write_chunk(data, %{pid: pid, ref: ref, monitor: monitor} = state) do
      send(pid, {ref, :chunk, data})

      receive do
        {^ref, :taken} -> {:ok, %{state | size: state.size + byte_size(data)}}
        {^ref, :result, {:error, reason}} -> {:error, reason, state}
        {:DOWN, ^monitor, _, _, reason} -> {:error, {:uploader_down, reason}, state}
      end
    end

    @impl true
    def close(%{pid: pid, ref: ref, monitor: monitor} = state, :done) do
      send(pid, {ref, :done})

      receive do
        {^ref, :result, {:ok, _key}} ->
          Process.demonitor(monitor, [:flush])
          etag = etag(state)
          {:ok, %{state | result: %{etag: etag}}}

        {^ref, :result, {:error, reason}} ->
          {:error, reason}

        {:DOWN, ^monitor, _, _, reason} ->
          {:error, {:uploader_down, reason}}
      end
    end

    def close(%{pid: pid, monitor: monitor} = state, _cancel_or_error) do
      # The uploader's death aborts its upload in the engine; wait until
      # the server has no multipart upload of the key left.
      Process.exit(pid, :kill)

      receive do
        {:DOWN, ^monitor, _, _, _} -> :ok
      end

      await_no_upload(state, System.monotonic_time(:millisecond) + @abort_wait_ms)
      {:ok, state}
    end

    defp etag(%{key: key, handle: handle}) do
      case Micelio.Storage.head(key, storage: handle) do
        {:ok, %{etag: etag}} -> etag
        _ -> nil
      end
    end

    defp await_no_upload(%{key: key, handle: handle} = state, deadline) do
      case Micelio.Storage.S3.incomplete_uploads(handle) do
        {:ok, uploads} ->
          full = (handle.config[:s3_prefix] || "") <> key

          if Enum.any?(uploads, &(&1.key in [key, full])) and
               System.monotonic_time(:millisecond) < deadline do
            Process.sleep(50)
            await_no_upload(state, deadline)
          else
            :ok
          end

        _other_backend ->
          :ok
      end
    end

    # The uploader process: put_stream over the chunks the channel hands in.
    defp upload(parent, ref, key, handle) do
      chunks =
        Stream.resource(
          fn -> :open end,
          fn
            :done ->
              {:halt, :done}

            :open ->
              receive do
                {^ref, :chunk, data} ->
                  send(parent, {ref, :taken})
                  {[data], :open}

                {^ref, :done} ->
                  {:halt, :done}
              end
          end,
          fn _ -> :ok end
        )

      send(parent, {ref, :result, Micelio.Storage.put_stream(key, chunks, storage: handle)})
    end
  end
end
