defmodule Micelio.Storage.Test.Enumerables do
  @moduledoc false
  # Hand-written enumerables with the answers the standard ones rarely
  # give. Here, not in a test file: protocols are consolidated before tests
  # are compiled.

  defmodule LastHalts do
    @moduledoc false
    # Hands its last element with `{:halted, acc}`, as Stream.take/2 does.
    defstruct [:items]

    defimpl Enumerable do
      def count(_), do: {:error, __MODULE__}
      def member?(_, _), do: {:error, __MODULE__}
      def slice(_), do: {:error, __MODULE__}

      def reduce(_, {:halt, acc}, _fun), do: {:halted, acc}
      def reduce(e, {:suspend, acc}, fun), do: {:suspended, acc, &reduce(e, &1, fun)}
      def reduce(%{items: []}, {:cont, acc}, _fun), do: {:done, acc}

      def reduce(%{items: [x]}, {:cont, acc}, fun) do
        {_, acc} = fun.(x, acc)
        {:halted, acc}
      end

      def reduce(%{items: [x | rest]} = e, {:cont, acc}, fun),
        do: reduce(%{e | items: rest}, fun.(x, acc), fun)
    end
  end

  defmodule SuspendsItself do
    @moduledoc false
    # Answers `{:done, acc}` right after its last element, never suspended.
    defstruct [:items]

    defimpl Enumerable do
      def count(_), do: {:error, __MODULE__}
      def member?(_, _), do: {:error, __MODULE__}
      def slice(_), do: {:error, __MODULE__}

      def reduce(_, {:halt, acc}, _fun), do: {:halted, acc}
      def reduce(e, {:suspend, acc}, fun), do: {:suspended, acc, &reduce(e, &1, fun)}
      def reduce(%{items: []}, {:cont, acc}, _fun), do: {:done, acc}

      def reduce(%{items: [x]}, {:cont, acc}, fun) do
        {_, acc} = fun.(x, acc)
        {:done, acc}
      end

      def reduce(%{items: [x | rest]} = e, {:cont, acc}, fun),
        do: reduce(%{e | items: rest}, fun.(x, acc), fun)
    end
  end
end
