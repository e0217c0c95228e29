defmodule Micelio.Storage.ReadmeFactsTest do
  # Facts the README repeats are checked against their one owner: the
  # settings table against `Micelio.Storage.Settings`, the error table
  # against the `reason` type.
  use ExUnit.Case, async: true

  @readme File.read!(Path.expand("../../../README.md", __DIR__))

  test "the README's settings table is the one Settings generates" do
    assert @readme =~ String.trim(Micelio.Storage.Settings.markdown()),
           "regenerate the README's table from Micelio.Storage.Settings.markdown/0"
  end

  test "every kind of error reason in the type has a row in the README's error table" do
    {:ok, types} = Code.Typespec.fetch_types(Micelio.Storage)

    {_, {:type, _, :union, members}, _} =
      Enum.find_value(types, fn
        {:type, {:reason, _, _} = t} -> t
        _ -> nil
      end)

    kinds =
      for member <- members do
        case member do
          {:atom, _, atom} -> atom
          {:type, _, :tuple, [{:atom, _, tag} | _]} -> tag
        end
      end

    rows = for line <- String.split(@readme, "\n"), String.starts_with?(line, "| `"), do: line

    for kind <- Enum.uniq(kinds) do
      assert Enum.any?(rows, &(&1 =~ "`:#{kind}" or &1 =~ "`{:#{kind}")),
             "the README's error table has no row for #{inspect(kind)}"
    end
  end
end
