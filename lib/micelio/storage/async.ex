defmodule Micelio.Storage.Async do
  @moduledoc false
  # Turns an async NIF (which returns a task guard at once and later sends
  # `{ref, result, retries}`) into a plain blocking call with a timeout. The guard stays
  # referenced while we wait: if this process dies, the guard is collected and
  # the Rust task is aborted.

  alias Micelio.Storage.Native

  # The Rust side enforces the timeout itself; this margin only covers a
  # runtime too busy to answer.
  @grace_ms 1_000

  @retries_key :"$micelio_storage_retries"

  @doc "The retries the last call in this process made (read once)."
  @spec take_retries() :: non_neg_integer()
  def take_retries, do: Process.delete(@retries_key) || 0

  # Kept for telemetry, which reads it right after the call.
  defp note_retries(0, result), do: result

  defp note_retries(retries, result) do
    Process.put(@retries_key, retries)
    result
  end

  @spec call(non_neg_integer(), (reference() -> term())) :: term()
  def call(timeout, start) do
    ref = make_ref()

    case start.(ref) do
      {:error, _} = error ->
        error

      guard ->
        {:done, result} = next(ref, guard, timeout + @grace_ms)
        result
    end
  end

  @doc """
  The next message of the engine task `ref`, the one place every wait on
  the engine goes through (plain calls, transfers, streams):

    * `{:message, msg}` for a message on the way: `{ref, :more}`,
      `{ref, :progress, done, total}`, `{ref, :meta, meta}`,
      `{ref, :chunk, binary}`;
    * `{:done, result}` for the last one, `{ref, result, retries}` (the
      retries are noted for telemetry);
    * `{:done, {:error, :timeout}}` when nothing came within `wait_ms`:
      the task is cancelled (a result that raced the cancel is taken).
  """
  @spec next(reference(), term(), timeout()) :: {:message, tuple()} | {:done, term()}
  def next(ref, guard, wait_ms) do
    receive do
      {^ref, :more} = msg -> {:message, msg}
      {^ref, :progress, _done, _total} = msg -> {:message, msg}
      {^ref, tag, _} = msg when tag in [:meta, :chunk] -> {:message, msg}
      {^ref, result, retries} when is_integer(retries) -> {:done, note_retries(retries, result)}
    after
      wait_ms ->
        Native.task_cancel(guard)

        receive do
          {^ref, result, retries} when is_integer(retries) ->
            {:done, note_retries(retries, result)}
        after
          0 -> {:done, {:error, :timeout}}
        end
    end
  end
end
