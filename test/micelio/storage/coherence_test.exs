defmodule Micelio.Storage.CoherenceTest do
  # Tiered caches that never serve a value older than the origin's: across
  # connected BEAM nodes (started with OTP's :peer, over SeaweedFS), after a
  # put that times out or loses its caller, and after kill -9 of an OS
  # process at random moments. Starts distribution: not async.
  use ExUnit.Case, async: false

  alias Micelio.Storage
  alias Micelio.Storage.Test.{Seaweed, Tmp}

  @moduletag :s3
  @moduletag timeout: 300_000

  setup_all do
    :ok = Seaweed.ensure_started()

    unless Node.alive?() do
      System.cmd("epmd", ["-daemon"])

      {:ok, _} =
        Node.start(:"micelio_test_#{System.unique_integer([:positive])}@127.0.0.1", :longnames)
    end

    Node.set_cookie(:micelio_coherence_cookie)
    :ok
  end

  defp start_peer(name, extra_args \\ []) do
    args =
      [~c"-setcookie", ~c"micelio_coherence_cookie"] ++
        extra_args ++ Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    {:ok, peer, node} =
      :peer.start_link(%{
        name: :"#{name}_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        connection: :standard_io,
        args: args
      })

    {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:micelio_storage])
    true = Node.connect(node)
    wait_until(fn -> node in Node.list() end)
    {peer, node}
  end

  defp on(peer, fun, args), do: :peer.call(peer, Storage, fun, args, 30_000)

  defp wait_until(fun, ms \\ 5_000) do
    deadline = System.monotonic_time(:millisecond) + ms

    Stream.repeatedly(fn -> fun.() end)
    |> Enum.find(fn ok? ->
      ok? or System.monotonic_time(:millisecond) > deadline or (Process.sleep(2) && false)
    end)

    assert fun.(), "condition not met within #{ms} ms"
  end

  # The processes holding files under `dir` open (for failure messages).
  defp holders(dir) do
    {out, _} =
      System.cmd("sh", [
        "-c",
        "for p in /proc/[0-9]*; do if ls -l $p/fd 2>/dev/null | grep -q '#{dir}'; then " <>
          "echo \"$p: $(tr '\\0' ' ' < $p/cmdline | cut -c1-200)\"; fi; done"
      ])

    "\nholders of #{dir}:\n" <> out
  end

  # What a port printed until it exited.
  defp collect(port, acc \\ "") do
    receive do
      {^port, {:data, data}} -> collect(port, acc <> data)
      {^port, {:exit_status, _}} -> acc
    after
      10_000 -> acc
    end
  end

  defp tiered(dir, extra) do
    Seaweed.opts(
      [backend: :tiered, origin_backend: :s3, cache_disk_path: dir, s3_prefix: extra[:prefix]] ++
        Keyword.delete(extra, :prefix)
    )
  end

  describe "across connected nodes" do
    test "a write on one node makes the other drop its copy" do
      {peer, _node} = start_peer(:coherence_b)
      prefix = "coh-#{System.unique_integer([:positive])}/"
      a = tiered(Tmp.dir!("coh-a"), prefix: prefix)
      b = tiered(Tmp.dir!("coh-b"), prefix: prefix)

      Storage.put!("k", "v1", a)
      assert {:ok, "v1"} = on(peer, :get, ["k", b])
      assert {:ok, "v1"} = on(peer, :get, ["k", b])
      assert {:ok, %{memory: %{hits: hits}}} = on(peer, :stats, [b])
      assert hits >= 1

      t0 = System.monotonic_time(:millisecond)
      Storage.put!("k", "v2", a)
      wait_until(fn -> on(peer, :get, ["k", b]) == {:ok, "v2"} end)
      elapsed = System.monotonic_time(:millisecond) - t0
      assert elapsed < 2_000

      Storage.delete!("k", a)
      wait_until(fn -> on(peer, :get, ["k", b]) == {:error, :not_found} end)

      for {op, check} <- [
            {fn -> Storage.put_if_none_match!("c", "new", a) end, {:ok, "new"}},
            {fn -> Storage.copy!("c", "d", a) end, nil},
            {fn -> Storage.delete_many!(["c"], a) end, {:error, :not_found}}
          ] do
        _ = on(peer, :get, ["c", b])
        op.()
        if check, do: wait_until(fn -> on(peer, :get, ["c", b]) == check end)
      end

      assert {:ok, "new"} = on(peer, :get, ["d", b])
      :peer.stop(peer)
    end

    test "a node disconnected during a write drops what it cached once reconnected" do
      # The writer cannot reconnect by itself, so the write happens while
      # this node is really cut off.
      {peer, node} = start_peer(:coherence_c, [~c"-kernel", ~c"dist_auto_connect", ~c"never"])
      prefix = "coh-dis-#{System.unique_integer([:positive])}/"
      a = tiered(Tmp.dir!("dis-a"), prefix: prefix)
      b = tiered(Tmp.dir!("dis-b"), prefix: prefix)

      {:ok, _} = on(peer, :put, ["k", "v1", b])
      assert {:ok, "v1"} = Storage.get("k", a)

      true = Node.disconnect(node)
      wait_until(fn -> node not in Node.list() end)
      {:ok, _} = on(peer, :put, ["k", "v2", b])
      # Cut off, this node still has its old copy...
      assert {:ok, "v1"} = Storage.get("k", a)
      # ...until it is connected again.
      true = Node.connect(node)
      wait_until(fn -> Storage.get("k", a) == {:ok, "v2"} end)
      :peer.stop(peer)
    end
  end

  describe "on one node" do
    test "a put whose caller is killed still invalidates the cache" do
      dir = Tmp.dir!("killed-caller")

      t = [
        backend: :tiered,
        origin_backend: :local,
        local_path: Path.join(dir, "origin"),
        cache_disk_path: Path.join(dir, "cache")
      ]

      origin = [backend: :local, local_path: Path.join(dir, "origin")]
      {:ok, _} = Storage.put("k", "v1", t)
      {:ok, "v1"} = Storage.get("k", t)
      big = :binary.copy("2", 64 * 1024 * 1024)
      pid = spawn(fn -> Storage.put("k", big, t) end)
      Process.sleep(10)
      Process.exit(pid, :kill)
      wait_until(fn -> match?({:ok, ^big}, Storage.get("k", origin)) end, 20_000)
      assert {:ok, ^big} = Storage.get("k", t)
    end

    test "an S3 put that times out still invalidates the cache" do
      t = tiered(Tmp.dir!("timeout-put"), prefix: "to-#{System.unique_integer([:positive])}/")
      Storage.put!("k", "v1", t)
      assert {:ok, "v1"} = Storage.get("k", t)
      big = :crypto.strong_rand_bytes(8 * 1024 * 1024)
      assert {:error, :timeout} = Storage.put("k", big, Keyword.put(t, :timeout, 20))
      origin = Keyword.merge(t, backend: :s3)
      wait_until(fn -> match?({:ok, ^big}, Storage.get("k", origin)) end, 20_000)
      assert {:ok, ^big} = Storage.get("k", t)
    end

    @tag timeout: 600_000
    test "kill -9 at random moments during writes and fills: never a stale byte after restart" do
      dir = Tmp.dir!("coh-kill")
      origin_dir = Path.join(dir, "origin")
      cache_dir = Path.join(dir, "cache")

      opts =
        "[backend: :tiered, origin_backend: :local, local_path: #{inspect(origin_dir)}, " <>
          "cache_disk_path: #{inspect(cache_dir)}, cache_memory_max_bytes: 0]"

      script = """
      opts = #{opts}
      IO.puts("ready")
      for gen <- Stream.iterate(1, &(&1 + 1)), i <- 0..7 do
        case Micelio.Storage.put("k\#{i}", "gen-\#{gen}-" <> :binary.copy("x", 50_000), opts) do
          {:ok, _} -> :ok
          other -> IO.puts("PUT FAILED " <> inspect(other))
        end
        _ = Micelio.Storage.get("k\#{rem(i + 3, 8)}", opts)
      end
      """

      elixir = System.find_executable("elixir")
      ebin = :code.lib_dir(:micelio_storage, :ebin)
      args = ["-pa", to_string(ebin), "-e", script]

      for _round <- 1..20 do
        port =
          Port.open({:spawn_executable, elixir}, [
            :binary,
            :exit_status,
            :stderr_to_stdout,
            args: args
          ])

        {:os_pid, os_pid} = Port.info(port, :os_pid)
        assert_receive {^port, {:data, "ready" <> _}}, 60_000
        Process.sleep(50 + :rand.uniform(400))
        {killed, status} = System.cmd("kill", ["-9", to_string(os_pid)], stderr_to_stdout: true)
        output = collect(port)
        assert status == 0, "the writer was not running: #{killed}\n#{output}"
        refute output =~ "PUT FAILED", output <> holders(cache_dir)

        # Reopen on the same cache directory, in another OS process, and
        # compare every key with the origin.
        check = """
        opts = #{opts}
        origin = [backend: :local, local_path: #{inspect(origin_dir)}]
        stale =
          for i <- 0..7, key = "k\#{i}", {:ok, want} <- [Micelio.Storage.get(key, origin)],
              got = Micelio.Storage.get(key, opts), got != {:ok, want} do
            case got do
              {:ok, body} -> {key, :stale, binary_part(body, 0, min(20, byte_size(body)))}
              other -> {key, other}
            end
          end
        IO.puts("STALE " <> inspect(stale))
        """

        {out, 0} = System.cmd(elixir, ["-pa", to_string(ebin), "-e", check])
        assert out =~ "STALE []", out <> holders(cache_dir)
      end
    end
  end

  describe "writers outside the cluster" do
    test "local origin: after cache_revalidate_after_ms a hit checks the origin" do
      dir = Tmp.dir!("reval-local")
      origin_dir = Path.join(dir, "origin")

      t = [
        backend: :tiered,
        origin_backend: :local,
        local_path: origin_dir,
        cache_disk_path: Path.join(dir, "cache"),
        cache_revalidate_after_ms: 200
      ]

      Storage.put!("k", "v1", t)
      assert Storage.get!("k", t) == "v1"
      # Another service writes the origin behind the cache's back.
      File.write!(Path.join(origin_dir, "k"), "v2")
      assert Storage.get!("k", t) == "v1"
      Process.sleep(300)
      assert Storage.get!("k", t) == "v2"

      assert {:ok, %{origin: %{revalidations: 1, revalidated_unchanged: 0, fetches: 2}}} =
               Storage.stats(t)

      # Unchanged: kept, and no new fetch.
      Process.sleep(300)
      assert Storage.get!("k", t) == "v2"

      assert {:ok, %{origin: %{revalidations: 2, revalidated_unchanged: 1, fetches: 2}}} =
               Storage.stats(t)

      assert Storage.get!("k", t) == "v2"
      assert {:ok, %{memory: %{hits: hits}}} = Storage.stats(t)
      assert hits >= 2
    end

    test "S3 origin: a revalidation is a conditional GET; a change is seen" do
      t = tiered(Tmp.dir!("reval-s3"), prefix: "rv-#{System.unique_integer([:positive])}/")
      t = Keyword.put(t, :cache_revalidate_after_ms, 200)
      direct = Keyword.put(t, :backend, :s3)
      Storage.put!("k", "v1", t)
      assert Storage.get!("k", t) == "v1"
      Storage.put!("k", "v2", direct)
      assert Storage.get!("k", t) == "v1"
      Process.sleep(300)
      assert Storage.get!("k", t) == "v2"
      Process.sleep(300)
      assert Storage.get!("k", t) == "v2"
      assert {:ok, %{origin: %{revalidations: 2, revalidated_unchanged: 1}}} = Storage.stats(t)
      # The disk tier too, with RAM off.
      no_ram =
        Keyword.merge(t, cache_memory_max_bytes: 0, cache_disk_path: Tmp.dir!("reval-s3-d"))

      assert Storage.get!("k", no_ram) == "v2"
      Storage.put!("k", "v3", direct)
      Process.sleep(300)
      assert Storage.get!("k", no_ram) == "v3"
    end
  end
end
