defmodule Micelio.Storage.MemoryConformanceTest do
  # The shared contract, against the memory backend.
  use ExUnit.Case, async: true
  use Micelio.Storage.Conformance

  setup do
    {:ok, opts: [backend: :memory, memory_name: "conf-#{System.unique_integer([:positive])}"]}
  end
end

defmodule Micelio.Storage.MemoryTest do
  use ExUnit.Case, async: true

  alias Micelio.Storage

  defp opts(extra \\ []),
    do: Keyword.merge([backend: :memory, memory_name: "m-#{System.unique_integer()}"], extra)

  test "is bounded: a put beyond memory_max_bytes fails like a full disk" do
    o = opts(memory_max_bytes: 1_000)
    assert {:ok, _} = Storage.put("a", :binary.copy("x", 600), o)
    assert {:error, {:io, :enospc}} = Storage.put("b", :binary.copy("x", 600), o)
    assert {:error, :not_found} = Storage.get("b", o)
    # Replacing frees the old value's bytes first.
    assert {:ok, _} = Storage.put("a", :binary.copy("y", 900), o)
    assert {:ok, _} = Storage.delete("a", o)
    assert {:ok, _} = Storage.put("b", :binary.copy("x", 1_000), o)
  end

  test "stores are isolated by name, shared by equal settings" do
    a = opts()
    b = opts()
    Storage.put!("k", "in a", a)
    assert {:error, :not_found} = Storage.get("k", b)
    assert Storage.get!("k", a) == "in a"
    {:ok, h} = Storage.open(a)
    assert Storage.get!("k", h) == "in a"
  end

  test "health is :ok" do
    assert :ok = Storage.health(opts())
  end
end
