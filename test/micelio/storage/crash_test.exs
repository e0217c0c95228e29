defmodule Micelio.Storage.CrashTest do
  # An OS process overwriting keys is killed with SIGKILL mid-stream; every
  # key must then hold one complete value, old or new.
  use ExUnit.Case, async: true

  alias Micelio.Storage

  @keys 20
  @value_size 256 * 1024

  @tag timeout: 120_000
  test "kill -9 during a stream of overwrites leaves only complete values" do
    root = Micelio.Storage.Test.Tmp.dir!("crash")

    script = """
    opts = [local_path: #{inspect(root)}]
    for gen <- Stream.iterate(1, &(&1 + 1)), i <- 0..#{@keys - 1} do
      value = :binary.copy(<<gen::32>>, #{div(@value_size, 4)})
      {:ok, _} = Micelio.Storage.put("k/\#{i}", value, opts)
      if gen == 3 and i == #{@keys - 1}, do: IO.puts("ready")
    end
    """

    elixir = System.find_executable("elixir")
    ebin = :code.lib_dir(:micelio_storage, :ebin)
    args = ["-pa", to_string(ebin), "-e", script]
    port = Port.open({:spawn_executable, elixir}, [:binary, :exit_status, args: args])
    {:os_pid, os_pid} = Port.info(port, :os_pid)

    assert_receive {^port, {:data, "ready" <> _}}, 60_000
    # Let it overwrite a while longer, then kill it without warning.
    Process.sleep(300)
    {_, 0} = System.cmd("kill", ["-9", to_string(os_pid)])
    assert_receive {^port, {:exit_status, status}}, 10_000
    assert status != 0

    for i <- 0..(@keys - 1) do
      value = Storage.get!("k/#{i}", local_path: root)
      assert byte_size(value) == @value_size
      <<gen::32, _::binary>> = value
      assert gen >= 3
      assert value == :binary.copy(<<gen::32>>, div(@value_size, 4)), "k/#{i} is torn"
    end

    assert length(Storage.list!("", local_path: root)) == @keys
  end
end
