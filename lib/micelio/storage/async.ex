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
        receive do
          {^ref, result, retries} -> note_retries(retries, result)
        after
          timeout + @grace_ms ->
            Native.task_cancel(guard)

            receive do
              {^ref, result, retries} -> note_retries(retries, result)
            after
              0 -> {:error, :timeout}
            end
        end
    end
  end
end
