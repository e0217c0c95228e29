defmodule Micelio.Storage.Transfer do
  @moduledoc false
  # Transfers of objects larger than memory (see native/micelio_storage/src/nif/transfer.rs).
  # The engine does the I/O on its runtime and talks to the calling process
  # by message: `{ref, :progress, done, total}`, `{ref, :more}` (an upload
  # wants the next chunk of the caller's enumerable), `{ref, :meta, meta}`
  # and `{ref, :chunk, binary}` (a download), and last `{ref, result,
  # retries}`. The engine bounds each step by the call's `:timeout`; the
  # wait here is only a backstop for an engine too busy to answer.

  alias Micelio.Storage.{Async, Chunks, Error, Handle, Native, Telemetry}

  @grace_ms 1_000

  # The one options map of each kind of transfer, as the engine decodes it
  # (`UploadOptions` and `DownloadOptions` in nif/transfer.rs).
  defp upload_options(%Handle{config: config}, attrs, xfer) do
    %{
      attributes: attrs,
      durable: config.durable,
      idle_ms: config.timeout,
      limit_ms: xfer.limit,
      progress: true
    }
  end

  defp download_options(%Handle{config: config}, range, xfer),
    do: %{range: range, idle_ms: config.timeout, limit_ms: xfer.limit, progress: true}

  @doc "Uploads the file at `path` under `key`: `{:ok, bytes uploaded}`."
  def put_file(%Handle{} = h, key, path, attrs, xfer) do
    ref = make_ref()
    idle = h.config.timeout
    start = Native.store_put_file(h.store, ref, key, path, upload_options(h, attrs, xfer))

    with guard when not is_tuple(guard) <- start do
      # The engine's last progress message counts every byte sent.
      case await(ref, guard, idle, xfer.progress, 0) do
        {:ok, bytes} -> {:ok, bytes}
        {:error, _} = error -> error
      end
    end
  end

  @doc "Downloads `key` to `path`."
  def get_file(%Handle{} = h, key, path, xfer) do
    ref = make_ref()
    idle = h.config.timeout
    start = Native.store_get_file(h.store, ref, key, path, download_options(h, nil, xfer))

    with guard when not is_tuple(guard) <- start do
      case await(ref, guard, idle, xfer.progress, 0) do
        {:ok, {:ok, meta}, _bytes} -> {:ok, meta}
        other -> other
      end
    end
  end

  @doc """
  Uploads what `enumerable` yields under `key`, one chunk per request:
  `{:ok, bytes uploaded}`.
  """
  def put_stream(%Handle{} = h, key, enumerable, attrs, xfer) do
    ref = make_ref()
    idle = h.config.timeout

    case Native.store_put_stream(h.store, ref, key, upload_options(h, attrs, xfer)) do
      {:ok, guard, feeder} ->
        source = %{cursor: Chunks.open(enumerable), failure: nil, fed: 0}
        {result, source} = feed_loop(ref, guard, idle, xfer.progress, feeder, source)
        Chunks.close(source.cursor)

        case {source.failure, result} do
          {nil, :ok} -> {:ok, source.fed}
          {nil, result} -> result
          {{kind, reason, stack}, _} -> :erlang.raise(kind, reason, stack)
        end

      error ->
        error
    end
  end

  defp feed_loop(ref, guard, idle, progress, feeder, source) do
    case Async.next(ref, guard, 2 * idle + @grace_ms) do
      {:message, {^ref, :more}} ->
        source = feed(feeder, source)
        feed_loop(ref, guard, idle, progress, feeder, source)

      {:message, {^ref, :progress, done, total}} ->
        report(progress, done, total)
        feed_loop(ref, guard, idle, progress, feeder, source)

      {:done, result} ->
        {result, source}
    end
  end

  defp feed(feeder, source) do
    case Chunks.next(source.cursor) do
      {:ok, chunk, cursor} ->
        case Chunks.to_binary(chunk) do
          {:ok, bytes} ->
            Native.stream_feed(feeder, bytes)
            %{source | cursor: cursor, fed: source.fed + byte_size(bytes)}

          :error ->
            Native.stream_feed(
              feeder,
              {:error,
               "the enumerable yielded #{Micelio.Storage.Config.shape(chunk)}, not iodata"}
            )

            %{source | cursor: cursor}
        end

      :done ->
        Native.stream_feed(feeder, :eof)
        %{source | cursor: :done}
    end
  catch
    kind, reason ->
      Native.stream_feed(feeder, {:error, "the enumerable raised"})
      %{source | cursor: :done, failure: {kind, reason, __STACKTRACE__}}
  end

  # The result; a success comes with the bytes the last progress message
  # counted (`{:ok, bytes}`, or `{:ok, value, bytes}` when the engine
  # answered a value).
  defp await(ref, guard, idle, progress, done) do
    case Async.next(ref, guard, 2 * idle + @grace_ms) do
      {:message, {^ref, :progress, done, total}} ->
        report(progress, done, total)
        await(ref, guard, idle, progress, done)

      {:done, :ok} ->
        {:ok, done}

      {:done, {:ok, value}} ->
        {:ok, {:ok, value}, done}

      {:done, result} ->
        result
    end
  end

  defp report(nil, _done, _total), do: :ok
  defp report(fun, done, total), do: fun.(done, total)

  @doc """
  A lazy stream of the object's chunks. Opening, and every failure on the
  way, raise `Micelio.Storage.Error`.
  """
  def stream(%Handle{} = h, key, range, xfer, to_meta) do
    Stream.resource(
      fn -> open_stream(h, key, range, xfer, to_meta) end,
      &next_chunk/1,
      &close_stream/1
    )
  end

  defp open_stream(h, key, range, xfer, _to_meta) do
    span = Telemetry.stream_start(:stream, h, key)
    ref = make_ref()
    idle = h.config.timeout

    case Native.store_get_stream(h.store, ref, key, download_options(h, range, xfer)) do
      {:ok, guard, reader} ->
        # One chunk in the mailbox ahead of the consumer.
        Native.stream_demand(reader, 2)

        state = %{
          ref: ref,
          guard: guard,
          reader: reader,
          idle: idle,
          key: key,
          done: false,
          span: span,
          bytes: 0
        }

        case Async.next(ref, guard, 2 * idle + @grace_ms) do
          {:message, {^ref, :meta, _meta}} -> state
          {:done, {:error, reason}} -> fail!(span, reason, key, false)
          {:done, _unexpected} -> fail!(span, :closed, key, false)
        end

      {:error, reason} ->
        fail!(span, reason, key, false)
    end
  end

  defp next_chunk(%{done: true} = state), do: {:halt, state}

  defp next_chunk(%{ref: ref} = state) do
    case Async.next(ref, state.guard, 2 * state.idle + @grace_ms) do
      {:message, {^ref, :chunk, bin}} ->
        Native.stream_demand(state.reader, 1)
        {[bin], %{state | bytes: state.bytes + byte_size(bin)}}

      {:done, :ok} ->
        {:halt, %{state | done: true}}

      {:done, {:error, reason}} ->
        fail!(state.span, reason, state.key, true)
    end
  end

  defp close_stream(%{ref: ref, guard: guard} = state) do
    Native.task_cancel(guard)
    flush(ref)
    Telemetry.stream_stop(state.span, :bytes, state.bytes)
  end

  # Raises the stream's error after its :exception event. `stop_follows?`:
  # the stream is open, so its close runs next and must send no :stop.
  defp fail!(span, reason, key, stop_follows?) do
    error = Error.exception(reason: reason, operation: :stream, key: key)
    {:current_stacktrace, [_ | stack]} = Process.info(self(), :current_stacktrace)
    Telemetry.stream_raised(span, :error, error, stack, stop_follows?)
    raise error
  end

  defp flush(ref) do
    receive do
      {^ref, _, _} -> flush(ref)
      {^ref, _, _, _} -> flush(ref)
    after
      0 -> :ok
    end
  end
end
