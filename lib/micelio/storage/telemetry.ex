defmodule Micelio.Storage.Telemetry do
  @moduledoc """
  Telemetry events of `Micelio.Storage`, sent through `:telemetry` when the
  host app has it loaded (every Phoenix app does); skipped, at the cost of
  one function-exported check, when it does not.

  ## Events

    * `[:micelio, :storage, operation, :start]` - measurements
      `%{system_time: native, monotonic_time: native}`;
    * `[:micelio, :storage, operation, :stop]` - measurements
      `%{duration: native, bytes: non_neg_integer}` (the content written or
      read, `0` otherwise);
    * `[:micelio, :storage, operation, :exception]` - measurements
      `%{duration: native}`, and `kind`, `reason` and `stacktrace` in the
      metadata, when the call raised.

  `operation` is the function's name without `!`: `:put`,
  `:put_if_none_match`, `:put_if_match`, `:get`, `:get_with_metadata`,
  `:head` (also for `exists?`), `:list`, `:delete`, `:copy`,
  `:delete_many`, `:presigned_url`, `:health`, `:put_file`, `:put_stream`,
  `:get_file`, `:list_with_delimiter`, `:public_url`.

  Metadata: `backend`, `store` (`Micelio.Storage` or the store module),
  `key` (the prefix for `list`, `nil` for `delete_many` and `health`),
  `result` (`:ok` or the error reason) on `:stop`, `retries` (S3 attempts
  after the first), and `tier` for tiered reads: `:disk`, `:origin`, or
  `:remote` (the CDN or the origin) when a CDN is configured.

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

        meta =
          meta
          |> Map.put(:result, outcome(result))
          |> Map.put(:retries, Micelio.Storage.Async.take_retries())

        meta = if tier, do: Map.put(meta, :tier, tier), else: meta
        duration = System.monotonic_time() - start
        emit(operation, :stop, %{duration: duration, bytes: bytes.(result)}, meta)
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
             Micelio.Storage.Store.run(handle, {:get, key, with_meta})}

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
  def body_bytes({:ok, body}) when is_binary(body), do: byte_size(body)
  def body_bytes({:ok, body, _meta}) when is_binary(body), do: byte_size(body)
  def body_bytes(_other), do: 0

  defp exception(operation, start, meta, kind, reason, stacktrace) do
    meta = Map.merge(meta, %{kind: kind, reason: reason, stacktrace: stacktrace})
    emit(operation, :exception, %{duration: System.monotonic_time() - start}, meta)
  end

  defp outcome({:error, reason}), do: reason
  defp outcome(_ok), do: :ok

  defp emit(operation, phase, measurements, meta),
    do: apply(:telemetry, :execute, [[:micelio, :storage, operation, phase], measurements, meta])
end
