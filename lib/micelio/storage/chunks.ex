defmodule Micelio.Storage.Chunks do
  @moduledoc false
  # Walks any `Enumerable` one element at a time, by suspension, so an
  # upload can ask for the next chunk only when the engine wants it. Every
  # path that consumes a caller's enumerable chunk by chunk (put_stream, the
  # content-addressed spool) goes through here.
  #
  # Why not `{:suspend, x}` with `x` as the accumulator: an enumerable may
  # answer the last element with `{:halted, acc}` or `{:done, acc}` instead
  # of `{:suspended, acc, cont}` (`Stream.take/2` does, so do hand-written
  # ones), and a composed stream may swallow a suspension and go on
  # (`Stream.concat/1` over a `Stream.take/2`: the inner halt ends the
  # inner stream, and the outer one reduces its next element with the
  # same accumulator). So the accumulator is the list of elements not
  # handed out yet: every element the reducer sees is kept until the walk
  # hands it out, whatever answer carries it back.

  @typedoc "Where the walk stands."
  @opaque cursor ::
            {:start, Enumerable.t()}
            | {:cont, (term -> term)}
            | {:pending, [term, ...], term}
            | :done

  @doc "A cursor at the start of `enumerable`."
  @spec open(Enumerable.t()) :: cursor
  def open(enumerable), do: {:start, enumerable}

  @doc """
  The next element and the cursor after it, or `:done`. Raises what the
  enumerable raises.
  """
  @spec next(cursor) :: {:ok, term, cursor} | :done
  def next({:start, enumerable}), do: step(Enumerable.reduce(enumerable, {:cont, []}, &take/2))
  def next({:cont, cont}), do: step(cont.({:cont, []}))
  def next({:pending, [x], after_them}), do: {:ok, x, after_them}
  def next({:pending, [x | rest], after_them}), do: {:ok, x, {:pending, rest, after_them}}
  def next(:done), do: :done

  @doc "Stops a walk that did not reach the end, so the enumerable can clean up."
  @spec close(cursor) :: :ok
  def close({:pending, _, after_them}), do: close(after_them)

  def close({:cont, cont}) do
    cont.({:halt, []})
    :ok
  catch
    _, _ -> :ok
  end

  def close(_), do: :ok

  @doc "A chunk as a binary, or `:error` when it is not iodata."
  @spec to_binary(term) :: {:ok, binary} | :error
  def to_binary(chunk) when is_binary(chunk), do: {:ok, chunk}

  def to_binary(chunk) when is_list(chunk) do
    {:ok, IO.iodata_to_binary(chunk)}
  rescue
    ArgumentError -> :error
  end

  def to_binary(_), do: :error

  defp take(x, pending), do: {:suspend, [x | pending]}

  defp step({:suspended, pending, cont}), do: emit(Enum.reverse(pending), {:cont, cont})

  defp step({final, pending}) when final in [:done, :halted],
    do: emit(Enum.reverse(pending), :done)

  defp emit([], after_them), do: next(after_them)
  defp emit(elements, after_them), do: next({:pending, elements, after_them})
end
