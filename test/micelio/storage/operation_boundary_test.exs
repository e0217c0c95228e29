defmodule Micelio.Storage.OperationBoundaryTest do
  # Requests cross into the engine typed (`Micelio.Storage.Operation`, a
  # rustler NifTaggedEnum on the other side): a request of the wrong shape
  # is refused as a whole, never read in part.
  use ExUnit.Case, async: true

  alias Micelio.Storage.{Operation, Store}

  setup do
    {:ok, handle} = Micelio.Storage.open(backend: :memory)
    Micelio.Storage.put!("a", "hello", storage: handle)
    {:ok, handle: handle}
  end

  test "each constructor's request decodes and runs", %{handle: h} do
    assert {:ok, "hello"} = Store.run(h, Operation.get("a", false))
    assert {:ok, "ell"} = Store.run(h, Operation.get("a", false, {1, 3}))
    assert {:ok, %{size: 5}} = Store.run(h, Operation.head("a"))
    assert :ok = Store.run(h, Operation.put("b", "x", :if_none_match, false, nil))
    assert {:ok, ["a", "b"]} = Store.run(h, Operation.list(""))
    assert :ok = Store.run(h, Operation.copy("a", "c", false, true))
    assert {:error, :precondition_failed} = Store.run(h, Operation.copy("a", "c", false, true))
    assert :ok = Store.run(h, Operation.delete("c", false))
    assert :ok = Store.run(h, Operation.health())
  end

  test "a misspelled field, a missing one or a positional tuple is refused whole", %{handle: h} do
    for bad <- [
          {:get, %{key: "a", with_meta: false}},
          {:get, %{key: "a", with_metadata: false, range: nil}},
          {:get, "a", false, nil},
          {:copy, %{from: "a", to: "d", durable: false, if_absent: "yes"}},
          {:no_such_operation, %{}},
          :no_such_operation
        ] do
      assert {:error, {:invalid_config, :operation, _}} = Store.run(h, bad), inspect(bad)
    end

    assert {:error, :not_found} = Store.run(h, Operation.get("d", false))
  end

  test "keys and ranges keep their own errors", %{handle: h} do
    assert {:error, {:invalid_key, _}} = Store.run(h, Operation.get("../x", false))
    assert {:error, {:invalid_config, :range, _}} = Store.run(h, Operation.get("a", false, :bad))
  end

  test "a transfer takes one options map, refused whole when it is not its own", %{handle: h} do
    alias Micelio.Storage.Native
    path = Path.join(System.tmp_dir!(), "micelio-boundary-#{System.unique_integer([:positive])}")
    File.write!(path, "x")
    on_exit(fn -> File.rm(path) end)

    for bad <- [
          %{durable: false},
          %{attributes: nil, durable: "no", idle_ms: 1000, limit_ms: 0, progress: false},
          [attributes: nil, durable: false, idle_ms: 1000, limit_ms: 0, progress: false]
        ] do
      assert {:error, {:invalid_config, :options, _}} =
               Native.store_put_file(h.store, make_ref(), "k", path, bad)
    end

    assert {:error, {:invalid_config, :options, _}} =
             Native.store_get_stream(h.store, make_ref(), "a", %{range: nil})
  end
end
