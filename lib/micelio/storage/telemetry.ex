defmodule Micelio.Storage.Telemetry do
  @moduledoc """
  Telemetry events of `Micelio.Storage`, sent through `:telemetry` when the
  host app has it loaded (every Phoenix app does); skipped, at the cost of
  one function-exported check, when it does not.

  ## Events

    * `[:micelio, :storage, operation, :start]` - measurements
      `%{system_time: native, monotonic_time: native}`;
    * `[:micelio, :storage, operation, :stop]` - measurements
      `%{duration: native, bytes: non_neg_integer}`: the object bytes the
      operation moved (written, read, uploaded, downloaded or copied,
      transfers included), `0` for operations that move none;
    * `[:micelio, :storage, operation, :exception]` - measurements
      `%{duration: native}`, and `kind`, `reason` and `stacktrace` in the
      metadata, when the call raised.

  `operation` is the function's name without `!`: `:put`,
  `:put_if_none_match`, `:put_if_match`, `:get`, `:get_with_metadata`,
  `:head` (also for `exists?`), `:list`, `:delete`, `:copy`,
  `:delete_many`, `:presigned_url`, `:health`, `:put_file`, `:put_stream`,
  `:get_file`, `:list_with_delimiter`, `:public_url`.

  The lazy streams send their events as they are enumerated: `:stream`
  sends `:start` when enumeration begins, and `:stop` with `bytes` (the
  content read) and `duration` when it ends or is halted; `:stream_keys`
  the same with `keys` (the keys listed) in place of `bytes`. Either sends
  `:exception` instead of `:stop` when it raises.

  Metadata: `backend`, `store` (`Micelio.Storage` or the store module),
  `key` (the prefix for `list`, `nil` for `delete_many` and `health`),
  `result` on `:stop`, `retries` (S3 attempts after the first), and `tier`
  for tiered reads: `:disk`, `:origin`, or `:remote` (the CDN or the
  origin) when a CDN is configured.

  `result` is a bounded atom, safe as a metric tag: `:ok`, or the kind of
  the error (`:not_found`, `:timeout`, `:invalid_key`, `:s3_error`,
  `:network`, ...: the reason itself when it is an atom, else its first
  element). The whole reason is under `reason`, on errors only; it may
  hold a key, so do not tag metrics with it.

  RAM-tier hits send no event: they are counted by `Micelio.Storage.stats/1`
  (`memory.hits`) instead, which keeps a hit at the speed of an ETS lookup.

  ## LiveDashboard

      # lib/my_app_web/telemetry.ex, in metrics/0
      summary("micelio.storage.get.stop.duration", unit: {:native, :millisecond}, tags: [:backend, :tier]),
      summary("micelio.storage.put.stop.duration", unit: {:native, :millisecond}, tags: [:backend]),
      sum("micelio.storage.put.stop.bytes", tags: [:backend]),
      counter("micelio.storage.get.stop.duration", tags: [:result]),
      sum("micelio.storage.put.stop.retries", measurement: fn _m, meta -> meta.retries end)
  """

  @doc "True when `:telemetry` is loaded, so events are sent."
  @spec enabled?() :: boolean()
  def enabled?, do: :erlang.function_exported(:telemetry, :execute, 3)

  @doc false
  # Runs `fun` between a :start and a :stop (or :exception) event. `fun`
  # returns the call's result; `bytes` measures it, and `extra` adds
  # metadata (the tier).
  def span(operation, handle, key, fun, bytes \\ fn _ -> 0 end, extra \\ %{}) do
    meta = Map.merge(%{backend: handle.backend, store: handle.name, key: key}, extra)
    # Retries noted by an earlier call made while no event was sent.
    _ = Micelio.Storage.Async.take_retries()
    start = System.monotonic_time()
    emit(operation, :start, %{system_time: System.system_time(), monotonic_time: start}, meta)

    try do
      fun.()
    rescue
      e ->
        exception(operation, start, meta, :error, e, __STACKTRACE__)
        reraise e, __STACKTRACE__
    catch
      kind, reason ->
        exception(operation, start, meta, kind, reason, __STACKTRACE__)
        :erlang.raise(kind, reason, __STACKTRACE__)
    else
      result ->
        {result, tier} =
          case result do
            {:tier, tier, result} -> {result, tier}
            result -> {result, nil}
          end

        {result, moved} =
          case result do
            {:moved, n, result} -> {result, n}
            result -> {result, bytes.(result)}
          end

        meta =
          meta
          |> result_meta(result)
          |> Map.put(:retries, Micelio.Storage.Async.take_retries())

        meta = if tier, do: Map.put(meta, :tier, tier), else: meta
        duration = System.monotonic_time() - start
        emit(operation, :stop, %{duration: duration, bytes: moved}, meta)
        result
    end
  end

  @doc false
  # A read with events: a RAM hit sends none (see the moduledoc); below RAM
  # the event says which tier answered.
  def read(operation, %{mode: :cached} = handle, key, with_meta) do
    Micelio.Storage.Store.get(handle, key, with_meta, &below_ram(operation, &1, &2, &3))
  end

  def read(operation, handle, key, with_meta) do
    span(
      operation,
      handle,
      key,
      fn -> Micelio.Storage.Store.get(handle, key, with_meta) end,
      &body_bytes/1
    )
  end

  @doc false
  # A tiered read below RAM, in one span that names the tier.
  def below_ram(operation, handle, key, with_meta) do
    span(
      operation,
      handle,
      key,
      fn ->
        case Micelio.Storage.Native.store_get_disk(handle.store, key, with_meta) do
          :miss ->
            {:tier, remote_tier(handle),
             Micelio.Storage.Store.run(handle, Micelio.Storage.Operation.get(key, with_meta))}

          found ->
            {:tier, :disk, found}
        end
      end,
      &body_bytes/1
    )
  end

  defp remote_tier(%{config: %{cdn_base_url: url}}) when is_binary(url), do: :remote
  defp remote_tier(_handle), do: :origin

  @doc false
  # Runs `fun` inside the operation's telemetry span when :telemetry is
  # loaded; otherwise just runs it.
  def observe(operation, key, handle, fun, bytes \\ fn _ -> 0 end) do
    if enabled?(),
      do: span(operation, handle, key, fun, bytes),
      else: unwrap(fun.())
  end

  @doc false
  def body_bytes({:ok, body}) when is_binary(body), do: byte_size(body)
  def body_bytes({:ok, body, _meta}) when is_binary(body), do: byte_size(body)
  def body_bytes(_other), do: 0

  defp exception(operation, start, meta, kind, reason, stacktrace) do
    meta = Map.merge(meta, %{kind: kind, reason: reason, stacktrace: stacktrace})
    emit(operation, :exception, %{duration: System.monotonic_time() - start}, meta)
  end

  @doc false
  # A result without the byte count a transfer wraps it in (for calls made
  # while :telemetry is not loaded).
  def unwrap({:moved, _bytes, result}), do: result
  def unwrap(result), do: result

  # `result` is bounded (a metric tag); the reason goes whole under `reason`.
  defp result_meta(meta, {:error, reason}),
    do: Map.merge(meta, %{result: kind(reason), reason: reason})

  defp result_meta(meta, _ok), do: Map.put(meta, :result, :ok)

  @doc false
  # The kind of an error reason: the atom, or a tagged tuple's tag.
  def kind(reason) when is_atom(reason), do: reason
  def kind(reason) when is_tuple(reason) and is_atom(elem(reason, 0)), do: elem(reason, 0)
  def kind(_reason), do: :error

  @doc false
  # Events of a lazy stream (`stream/2`, `stream_keys/2`): `start/3` when
  # enumeration begins, `raised/4` before the stream raises, `stop/3` when
  # it ends or is halted (after a raise it sends nothing more).
  def stream_start(operation, handle, key) do
    span = %{
      operation: operation,
      meta: %{backend: handle.backend, store: handle.name, key: key},
      start: System.monotonic_time(),
      id: make_ref()
    }

    if enabled?(),
      do:
        emit(
          operation,
          :start,
          %{system_time: System.system_time(), monotonic_time: span.start},
          span.meta
        )

    span
  end

  @doc false
  def stream_raised(span, kind, reason, stacktrace, stop_follows? \\ true) do
    if stop_follows?, do: Process.put({__MODULE__, span.id}, :raised)
    if enabled?(), do: exception(span.operation, span.start, span.meta, kind, reason, stacktrace)
    :ok
  end

  @doc false
  def stream_stop(span, measurement, count) do
    case Process.delete({__MODULE__, span.id}) do
      :raised ->
        :ok

      nil ->
        if enabled?() do
          duration = System.monotonic_time() - span.start

          emit(
            span.operation,
            :stop,
            %{:duration => duration, measurement => count},
            Map.put(span.meta, :result, :ok)
          )
        end

        :ok
    end
  end

  defp emit(operation, phase, measurements, meta),
    do: apply(:telemetry, :execute, [[:micelio, :storage, operation, phase], measurements, meta])
end
