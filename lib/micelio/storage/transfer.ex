defmodule Micelio.Storage.Transfer do
  @moduledoc false
  # Transfers of objects larger than memory (see native/micelio_storage/src/nif/transfer.rs).
  # The engine does the I/O on its runtime and talks to the calling process
  # by message: `{ref, :progress, done, total}`, `{ref, :more}` (an upload
  # wants the next chunk of the caller's enumerable), `{ref, :meta, meta}`
  # and `{ref, :chunk, binary}` (a download), and last `{ref, result,
  # retries}`. The engine bounds each step by the call's `:timeout`; the
  # wait here is only a backstop for an engine too busy to answer.

  alias Micelio.Storage.{Chunks, Error, Handle, Native}

  @grace_ms 1_000

  @doc "Uploads the file at `path` under `key`."
  def put_file(%Handle{} = h, key, path, attrs, xfer) do
    ref = make_ref()
    %{timeout: idle, durable: durable} = h.config

    start = Native.store_put_file(h.store, ref, key, path, attrs, durable, idle, xfer.limit, true)

    with guard when not is_tuple(guard) <- start do
      await(ref, guard, idle, xfer.progress, nil)
    end
  end

  @doc "Downloads `key` to `path`."
  def get_file(%Handle{} = h, key, path, xfer) do
    ref = make_ref()
    idle = h.config.timeout
    start = Native.store_get_file(h.store, ref, key, path, nil, idle, xfer.limit, true)

    with guard when not is_tuple(guard) <- start do
      await(ref, guard, idle, xfer.progress, nil)
    end
  end

  @doc "Uploads what `enumerable` yields under `key`, one chunk per request."
  def put_stream(%Handle{} = h, key, enumerable, attrs, xfer) do
    ref = make_ref()
    %{timeout: idle, durable: durable} = h.config

    case Native.store_put_stream(h.store, ref, key, attrs, durable, idle, xfer.limit, true) do
      {:ok, guard, feeder} ->
        source = %{cursor: Chunks.open(enumerable), failure: nil}
        {result, source} = feed_loop(ref, guard, idle, xfer.progress, feeder, source)
        Chunks.close(source.cursor)

        case source.failure do
          nil -> result
          {kind, reason, stack} -> :erlang.raise(kind, reason, stack)
        end

      error ->
        error
    end
  end

  defp feed_loop(ref, guard, idle, progress, feeder, source) do
    receive do
      {^ref, :more} ->
        source = feed(feeder, source)
        feed_loop(ref, guard, idle, progress, feeder, source)

      {^ref, :progress, done, total} ->
        report(progress, done, total)
        feed_loop(ref, guard, idle, progress, feeder, source)

      {^ref, result, _retries} ->
        {result, source}
    after
      2 * idle + @grace_ms ->
        Native.task_cancel(guard)
        {{:error, :timeout}, source}
    end
  end

  defp feed(feeder, source) do
    case Chunks.next(source.cursor) do
      {:ok, chunk, cursor} ->
        case Chunks.to_binary(chunk) do
          {:ok, bytes} ->
            Native.stream_feed(feeder, bytes)

          :error ->
            Native.stream_feed(
              feeder,
              {:error,
               "the enumerable yielded #{Micelio.Storage.Config.shape(chunk)}, not iodata"}
            )
        end

        %{source | cursor: cursor}

      :done ->
        Native.stream_feed(feeder, :eof)
        %{source | cursor: :done}
    end
  catch
    kind, reason ->
      Native.stream_feed(feeder, {:error, "the enumerable raised"})
      %{source | cursor: :done, failure: {kind, reason, __STACKTRACE__}}
  end

  defp await(ref, guard, idle, progress, _) do
    receive do
      {^ref, :progress, done, total} ->
        report(progress, done, total)
        await(ref, guard, idle, progress, nil)

      {^ref, result, _retries} ->
        result
    after
      2 * idle + @grace_ms ->
        Native.task_cancel(guard)
        {:error, :timeout}
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
    ref = make_ref()
    idle = h.config.timeout

    case Native.store_get_stream(h.store, ref, key, range, idle, xfer.limit) do
      {:ok, guard, reader} ->
        # One chunk in the mailbox ahead of the consumer.
        Native.stream_demand(reader, 2)
        state = %{ref: ref, guard: guard, reader: reader, idle: idle, key: key, done: false}

        receive do
          {^ref, :meta, _meta} -> state
          {^ref, {:error, reason}, _} -> raise Error, reason: reason, operation: :stream, key: key
        after
          2 * idle + @grace_ms ->
            Native.task_cancel(guard)
            raise Error, reason: :timeout, operation: :stream, key: key
        end

      {:error, reason} ->
        raise Error, reason: reason, operation: :stream, key: key
    end
  end

  defp next_chunk(%{done: true} = state), do: {:halt, state}

  defp next_chunk(%{ref: ref} = state) do
    receive do
      {^ref, :chunk, bin} ->
        Native.stream_demand(state.reader, 1)
        {[bin], state}

      {^ref, :ok, _retries} ->
        {:halt, %{state | done: true}}

      {^ref, {:error, reason}, _retries} ->
        raise Error, reason: reason, operation: :stream, key: state.key
    after
      2 * state.idle + @grace_ms ->
        Native.task_cancel(state.guard)
        raise Error, reason: :timeout, operation: :stream, key: state.key
    end
  end

  defp close_stream(%{ref: ref, guard: guard}) do
    Native.task_cancel(guard)
    flush(ref)
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
