defmodule Micelio.Storage.RuntimeTest do
  use ExUnit.Case, async: false

  alias Micelio.Storage.{Async, Native}

  test "a Rust panic in a sync NIF is an error tuple, not a crash" do
    assert {:error, {:panic, "deliberate panic (sync)"}} = Native.debug_panic_sync()
  end

  test "a Rust panic on the async runtime is an error tuple, not a crash" do
    assert {:error, {:panic, "deliberate panic (async)"}} =
             Async.call(5_000, &Native.debug_panic_async/1)
  end

  test "async work past its timeout answers {:error, :timeout}" do
    assert {:error, :timeout} = Async.call(50, &Native.debug_sleep(&1, 5_000, 50))
    assert :ok = Async.call(1_000, &Native.debug_sleep(&1, 10, 1_000))
  end

  test "async calls leave no message behind" do
    Async.call(1_000, &Native.debug_sleep(&1, 1, 1_000))
    Async.call(20, &Native.debug_sleep(&1, 5_000, 20))
    refute_received _
  end

  test "work whose caller died is aborted" do
    # Tasks of earlier tests (aborted uploads, closed streams) may still be
    # winding down: start from a count that holds still.
    baseline = settled_live_tasks()
    caller = spawn(fn -> Async.call(60_000, &Native.debug_sleep(&1, 60_000, 60_000)) end)
    wait_until(fn -> Native.debug_live_tasks() == baseline + 1 end)
    Process.exit(caller, :kill)
    # The dead caller's guard is freed with its heap; that aborts the task.
    wait_until(fn -> Native.debug_live_tasks() == baseline end)
  end

  defp settled_live_tasks(last \\ -1, tries \\ 100) do
    now = Native.debug_live_tasks()

    if now == last or tries == 0 do
      now
    else
      Process.sleep(100)
      settled_live_tasks(now, tries - 1)
    end
  end

  defp wait_until(fun, tries \\ 200) do
    cond do
      fun.() -> :ok
      tries == 0 -> flunk("condition never became true")
      true -> Process.sleep(10) && wait_until(fun, tries - 1)
    end
  end
end
