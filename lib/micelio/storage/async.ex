defmodule Micelio.Storage.Async do
  @moduledoc false
  # Turns an async NIF (which returns a task guard at once and later sends
  # `{ref, result}`) into a plain blocking call with a timeout. The guard stays
  # referenced while we wait: if this process dies, the guard is collected and
  # the Rust task is aborted.

  alias Micelio.Storage.Native

  # The Rust side enforces the timeout itself; this margin only covers a
  # runtime too busy to answer.
  @grace_ms 1_000

  @spec call(non_neg_integer(), (reference() -> term())) :: term()
  def call(timeout, start) do
    ref = make_ref()

    case start.(ref) do
      {:error, _} = error ->
        error

      guard ->
        receive do
          {^ref, result} -> result
        after
          timeout + @grace_ms ->
            Native.task_cancel(guard)

            receive do
              {^ref, result} -> result
            after
              0 -> {:error, :timeout}
            end
        end
    end
  end
end
