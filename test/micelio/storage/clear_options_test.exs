defmodule Micelio.Storage.ClearOptionsTest do
  # Options as a Phoenix team writes them (issue 21): an Elixir range for
  # `range:`, `open/0` like a named store's.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.Tmp

  test "range: takes an Elixir range of byte positions, both ends included" do
    o = [local_path: Tmp.dir!("range-opts")]
    {:ok, _} = Storage.put("r", "0123456789", o)
    assert Storage.get("r", [range: 0..4] ++ o) == {:ok, "01234"}
    assert Storage.get("r", [range: 7..20] ++ o) == {:ok, "789"}
    assert Storage.stream("r", [range: 2..3] ++ o) |> Enum.join() == "23"
    assert {:error, {:invalid_config, :range, msg}} = Storage.get("r", [range: 5..1//-1] ++ o)
    assert msg =~ "5..1//-1"
    assert {:error, {:invalid_config, :range, msg}} = Storage.get("r", [range: %{a: 1}] ++ o)
    assert msg =~ "0..4"
  end

  test "open/0 resolves the app's configuration, as a named store's open/0 does" do
    assert {:ok, %Micelio.Storage.Handle{}} = Storage.open()
  end
end
