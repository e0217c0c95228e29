defmodule Micelio.Storage.Test.Enumerables do
  @moduledoc false
  # Hand-written enumerables with the answers the standard ones rarely
  # give. Here, not in a test file: protocols are consolidated before tests
  # are compiled.

  defmodule LastInFinal do
    @moduledoc false
    # Hands its last element in its final answer, `{final, acc}` with
    # `final` `:halted` (as Stream.take/2 does) or `:done`, never suspended.
    defstruct [:items, final: :halted]

    defimpl Enumerable do
      def count(_), do: {:error, __MODULE__}
      def member?(_, _), do: {:error, __MODULE__}
      def slice(_), do: {:error, __MODULE__}

      def reduce(_, {:halt, acc}, _fun), do: {:halted, acc}
      def reduce(e, {:suspend, acc}, fun), do: {:suspended, acc, &reduce(e, &1, fun)}
      def reduce(%{items: []}, {:cont, acc}, _fun), do: {:done, acc}

      def reduce(%{items: [x], final: final}, {:cont, acc}, fun) do
        {_, acc} = fun.(x, acc)
        {final, acc}
      end

      def reduce(%{items: [x | rest]} = e, {:cont, acc}, fun),
        do: reduce(%{e | items: rest}, fun.(x, acc), fun)
    end
  end
end
