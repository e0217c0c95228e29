defmodule Micelio.Storage.TempSweepTest do
  # Temp files left by writers killed with SIGKILL are removed when a store
  # opens on the root, once they are old enough that no live writer can own
  # them; a live writer's temp file is left alone.
  use ExUnit.Case, async: true

  alias Micelio.Storage

  @tag timeout: 120_000
  test "stale .micelio-tmp-* files are swept when a store opens" do
    root = Micelio.Storage.Test.Tmp.dir!("sweep")

    # A real OS process writing large values, killed mid-write, several times.
    for round <- 1..5 do
      script = """
      opts = [local_path: #{inspect(root)}]
      value = :binary.copy("x", 16 * 1024 * 1024)
      IO.puts("ready")
      for i <- Stream.iterate(0, &(&1 + 1)), do: {:ok, _} = Micelio.Storage.put("d#{round}/k\#{rem(i, 3)}", value, opts)
      """

      elixir = System.find_executable("elixir")
      ebin = :code.lib_dir(:micelio_storage, :ebin)
      args = ["-pa", to_string(ebin), "-e", script]
      port = Port.open({:spawn_executable, elixir}, [:binary, :exit_status, args: args])
      {:os_pid, os_pid} = Port.info(port, :os_pid)
      assert_receive {^port, {:data, "ready" <> _}}, 60_000
      Process.sleep(150 + :rand.uniform(200))
      {_, 0} = System.cmd("kill", ["-9", to_string(os_pid)])
      assert_receive {^port, {:exit_status, _}}, 10_000
    end

    # Whatever the kills left, plus one planted deep down, made an hour old;
    # and one fresh temp file, as a live writer in another process has.
    planted = Path.join([root, "deep", "er", ".micelio-tmp-00000000deadbeef"])
    File.mkdir_p!(Path.dirname(planted))
    File.write!(planted, "partial")
    stale = [planted | temps(root)] |> Enum.uniq()
    two_hours_ago = System.os_time(:second) - 2 * 3600
    for path <- stale, do: File.touch!(path, two_hours_ago)
    live = Path.join([root, "d1", ".micelio-tmp-00000000cafef00d"])
    File.mkdir_p!(Path.dirname(live))
    File.write!(live, "being written")

    # The first store opened on this root in this VM sweeps it, in the
    # background (opening a store walks nothing).
    assert {:ok, keys} = Storage.list("", local_path: root)
    assert Enum.all?(keys, &(not String.contains?(&1, ".micelio-tmp-")))
    assert eventually(fn -> temps(root) == [live] end)
    assert File.read!(live) == "being written"

    for key <- keys do
      assert byte_size(Storage.get!(key, local_path: root)) == 16 * 1024 * 1024
    end
  end

  defp eventually(check, tries \\ 100) do
    cond do
      check.() -> true
      tries == 0 -> false
      true -> Process.sleep(50) && eventually(check, tries - 1)
    end
  end

  defp temps(root) do
    Path.wildcard(Path.join(root, "**/.micelio-tmp-*"), match_dot: true) |> Enum.sort()
  end
end
