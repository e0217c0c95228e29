defmodule Micelio.Storage.TieredTest do
  # The tiered backend's own behaviour: which tier serves what, the CDN tier
  # against a real :inets httpd, merged misses, budgets, corrupted cache files
  # and a cache that outlives its VM.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Native
  alias Micelio.Storage.Test.{Cdn, Tmp}

  defp opts(extra \\ []) do
    dir = Tmp.dir!("tiered")

    Keyword.merge(
      [
        backend: :tiered,
        origin_backend: :local,
        local_path: Path.join(dir, "origin"),
        cache_disk_path: Path.join(dir, "cache"),
        cache_memory_max_bytes: 8_000_000,
        cache_disk_max_bytes: 32_000_000
      ],
      extra
    )
  end

  defp stats(o), do: elem(Storage.stats(o), 1)

  # Writes to the origin behind the cache's back, as another node would.
  defp origin_write(o, key, content) do
    path = Path.join(o[:local_path], key)
    File.mkdir_p!(Path.dirname(path))
    File.write!(path, content)
  end

  defp cache_files(o) do
    Path.wildcard(Path.join(o[:cache_disk_path], "*/*"))
  end

  describe "large objects through the cache" do
    test "a stream under the disk limit fills the disk tier; larger ones pass through" do
      o = opts(cache_memory_max_bytes: 0, cache_disk_max_object_bytes: 4_000_000)
      small = :crypto.strong_rand_bytes(3_000_000)
      big = :crypto.strong_rand_bytes(5_000_000)
      Storage.put!("s/small", small, o)
      Storage.put!("s/big", big, o)

      assert Storage.stream("s/small", o) |> Enum.join() == small
      assert Storage.stream("s/big", o) |> Enum.join() == big
      assert %{disk: %{entries: 1}} = stats(o)

      # Served from the disk copy now: the origin's file is gone.
      File.rm!(Path.join(o[:local_path], "s/small"))
      assert Storage.stream("s/small", o) |> Enum.join() == small
      out = Path.join(Tmp.dir!("tiered-out"), "small")
      assert {:ok, %{size: 3_000_000}} = Storage.get_file("s/small", out, o)
      assert File.read!(out) == small
    end

    test "uploads go to the origin and drop the cached copy" do
      o = opts()
      Storage.put!("u/k", "old", o)
      assert Storage.get!("u/k", o) == "old"
      path = Path.join(Tmp.dir!("tiered-up"), "new")
      File.write!(path, "new content")
      assert {:ok, "u/k"} = Storage.put_file("u/k", path, o)
      assert Storage.get!("u/k", o) == "new content"
      assert {:ok, "u/k"} = Storage.put_stream("u/k", ["streamed"], o)
      assert Storage.get!("u/k", o) == "streamed"
      assert File.read!(Path.join(o[:local_path], "u/k")) == "streamed"
    end
  end

  describe "reads go RAM -> disk -> origin" do
    test "a miss fills RAM and disk; later reads hit RAM" do
      o = opts()
      Storage.put!("a/b.txt", "hello", o)
      assert Storage.get!("a/b.txt", o) == "hello"
      assert %{origin: %{fetches: 1}, memory: %{misses: 1, entries: 1}} = stats(o)
      assert [_] = cache_files(o)

      for _ <- 1..5, do: assert(Storage.get!("a/b.txt", o) == "hello")
      assert %{origin: %{fetches: 1}, memory: %{hits: 5}, disk: %{hits: 0}} = stats(o)
    end

    test "with RAM off, the disk tier serves repeats" do
      o = opts(cache_memory_max_bytes: 0)
      Storage.put!("k", "v", o)
      assert Storage.get!("k", o) == "v"
      assert Storage.get!("k", o) == "v"
      s = stats(o)
      refute Map.has_key?(s, :memory)
      assert %{disk: %{hits: 1, misses: 1}, origin: %{fetches: 1}} = s
    end

    test "head and exists? use the cached metadata, get_with_metadata matches head" do
      o = opts()
      Storage.put!("m", "12345", o)
      {:ok, %{content: "12345", etag: etag, size: 5}} = Storage.get_with_metadata("m", o)
      # The origin loses the file behind the cache's back: the cache still knows.
      File.rm!(Path.join(o[:local_path], "m"))
      assert {:ok, %{etag: ^etag, size: 5}} = Storage.head("m", o)
      assert Storage.exists?("m", o)
    end

    test "list asks the origin" do
      o = opts()
      origin_write(o, "p/x", "1")
      Storage.put!("p/y", "2", o)
      assert Storage.list!("p/", o) == ["p/x", "p/y"]
    end

    test "a handle from open/1 reads the same store" do
      o = opts()
      {:ok, h} = Storage.open(o)
      assert inspect(h) =~ "tiered"
      Storage.put!("h", "v", h)
      assert Storage.get!("h", h) == "v"
      assert Storage.get!("h", o) == "v"
      assert %{memory: %{hits: 1}} = stats(h)
    end

    test "one cache directory serves one set of settings at a time" do
      o = opts()
      {:ok, h} = Storage.open(o)
      # Equal settings share the live store, even when built again.
      {:ok, again} = Storage.open(Keyword.put(o, :timeout, 29_999))
      Storage.put!("shared", "1", h)
      assert Storage.get!("shared", again) == "1"

      assert {:error, {:invalid_config, :cache_disk_path, msg}} =
               Storage.open(Keyword.put(o, :cache_memory_max_bytes, 1_000_000))

      assert msg =~ "in use by a tiered store with other settings"
    end

    test "stats on another backend is an error" do
      assert {:error, {:invalid_config, :backend, _}} =
               Storage.stats(backend: :local, local_path: Tmp.dir!("x"))
    end
  end

  describe "writes invalidate" do
    test "put and delete are seen at once by the next get" do
      o = opts()
      Storage.put!("k", "v1", o)
      assert Storage.get!("k", o) == "v1"
      Storage.put!("k", "v2", o)
      assert Storage.get!("k", o) == "v2"
      Storage.delete!("k", o)
      assert {:error, :not_found} = Storage.get("k", o)
      assert cache_files(o) == []
    end

    # A conditional put drops the cached copy before it is sent (it may
    # succeed, and a crash must not leave the old copy), so a failed one
    # costs one more origin read, never a wrong value.
    test "a failed conditional put leaves the value, refetched once" do
      o = opts()
      Storage.put!("k", "v1", o)
      assert Storage.get!("k", o) == "v1"
      assert {:error, :precondition_failed} = Storage.put_if_none_match("k", "v2", o)
      assert Storage.get!("k", o) == "v1"
      assert Storage.get!("k", o) == "v1"
      assert %{origin: %{fetches: 2}, memory: %{hits: 1}} = stats(o)
    end

    test "reads racing writes never keep a stale value cached" do
      o = opts()
      Storage.put!("race", "0", o)

      readers =
        for _ <- 1..4 do
          Task.async(fn -> for _ <- 1..300, do: Storage.get!("race", o) end)
        end

      for i <- 1..100, do: Storage.put!("race", Integer.to_string(i), o)
      Enum.each(readers, &Task.await(&1, 30_000))
      # After the last write, every tier must agree with the origin.
      assert Storage.get!("race", o) == "100"
      assert Storage.get!("race", o) == "100"
    end
  end

  describe "merged misses" do
    test "100 processes asking for one cold key make one origin fetch" do
      o = opts()
      value = :crypto.strong_rand_bytes(200_000)
      origin_write(o, "cold", value)
      parent = self()

      tasks =
        for _ <- 1..100 do
          Task.async(fn ->
            send(parent, {:ready, self()})
            receive do: (:go -> Storage.get("cold", o))
          end)
        end

      for _ <- tasks, do: assert_receive({:ready, _})
      for t <- tasks, do: send(t.pid, :go)
      assert Enum.all?(Task.await_many(tasks, 30_000), &(&1 == {:ok, value}))
      assert %{origin: %{fetches: 1}} = stats(o)
    end
  end

  describe "byte budgets" do
    test "RAM and disk stay within budget under a stream of random sizes" do
      mem = 1_000_000
      disk = 2_000_000
      o = opts(cache_memory_max_bytes: mem, cache_disk_max_bytes: disk)
      {:ok, h} = Storage.open(o)
      :rand.seed(:exsss, {1, 2, 3})

      for i <- 1..300 do
        key = "r/#{:rand.uniform(120)}"
        size = Enum.random([0, 10, 1_000, 30_000, 100_000, 240_000])
        if rem(i, 4) == 0, do: Storage.put!(key, :binary.copy("x", size), h)
        origin_write(o, key, :binary.copy("y", size))
        _ = Storage.get(key, h)

        s = stats(h)
        assert s.memory.bytes <= mem
        assert Native.store_memory_charged(h.store) <= mem
        assert s.disk.bytes <= disk
        on_disk = cache_files(o) |> Enum.map(&File.stat!(&1).size) |> Enum.sum()
        assert on_disk == s.disk.bytes
      end

      s = stats(h)
      assert s.memory.evictions > 0 and s.disk.evictions > 0
    end
  end

  describe "disk tier integrity" do
    for {label, damage} <- [
          flipped: quote(do: fn path -> flip_last_byte(path) end),
          truncated:
            quote(
              do: fn path ->
                {:ok, f} = :file.open(path, [:read, :write])
                {:ok, _} = :file.position(f, File.stat!(path).size - 3)
                :ok = :file.truncate(f)
                File.close(f)
              end
            )
        ] do
      test "a #{label} cache file is dropped and fetched again" do
        o = opts(cache_memory_max_bytes: 0)
        value = :crypto.strong_rand_bytes(10_000)
        Storage.put!("c", value, o)
        assert Storage.get!("c", o) == value
        [file] = cache_files(o)
        unquote(damage).(file)

        assert Storage.get!("c", o) == value
        assert %{disk: %{corrupt: 1}, origin: %{fetches: 2}} = stats(o)
        # Fetched again, the file is whole once more.
        assert Storage.get!("c", o) == value
        assert %{disk: %{hits: 1, corrupt: 1}} = stats(o)
      end
    end
  end

  def flip_last_byte(path) do
    bin = File.read!(path)
    size = byte_size(bin) - 1
    <<head::binary-size(size), last>> = bin
    File.write!(path, <<head::binary, Bitwise.bxor(last, 0xFF)>>)
  end

  describe "CDN tier (a real :inets httpd)" do
    setup do
      cdn = Cdn.start!()
      on_exit(fn -> Cdn.stop(cdn) end)
      {:ok, cdn: cdn}
    end

    test "serves what the CDN has, with url-encoded keys, then from RAM", %{cdn: cdn} do
      o = opts(cdn_base_url: cdn.url)
      key = "dir/a b&c+é.txt"
      Cdn.publish(cdn, key, "from the cdn")
      assert Storage.get!(key, o) == "from the cdn"
      assert Storage.get!(key, o) == "from the cdn"
      assert %{cdn: %{hits: 1}, origin: %{fetches: 0}, memory: %{hits: 1}} = stats(o)
      assert Cdn.requests(cdn) == 1
      assert {:ok, %{etag: "cdn-" <> _}} = Storage.get_with_metadata(key, o)
    end

    test "a CDN 404 falls through to the origin", %{cdn: cdn} do
      o = opts(cdn_base_url: cdn.url)
      origin_write(o, "only-origin", "o")
      assert Storage.get!("only-origin", o) == "o"
      assert %{cdn: %{misses: 1, errors: 0}, origin: %{fetches: 1}} = stats(o)
    end

    test "a CDN answering 500 falls through to the origin", %{cdn: cdn} do
      Cdn.set_mode(cdn, :error)
      o = opts(cdn_base_url: cdn.url)
      origin_write(o, "k", "from origin")
      assert Storage.get!("k", o) == "from origin"
      assert {:ok, %{size: 11}} = Storage.head("k", o)
      assert %{cdn: %{errors: 1}, origin: %{fetches: 1}} = stats(o)
    end

    test "a CDN that hangs costs at most its timeout", %{cdn: cdn} do
      Cdn.set_mode(cdn, :hang)
      o = opts(cdn_base_url: cdn.url, cdn_timeout_ms: 300)
      origin_write(o, "k", "from origin")
      {micros, result} = :timer.tc(fn -> Storage.get("k", o) end)
      assert result == {:ok, "from origin"}
      # 300 ms for the CDN plus the origin's own (local) time, with slack for a busy CI.
      assert micros < 2_500_000
      assert %{cdn: %{errors: 1}, origin: %{fetches: 1}} = stats(o)
    end

    test "after a put or delete on this node the CDN's old copy is not served", %{cdn: cdn} do
      o = opts(cdn_base_url: cdn.url)
      Cdn.publish(cdn, "k", "old")
      assert Storage.get!("k", o) == "old"
      Storage.put!("k", "new", o)
      assert Storage.get!("k", o) == "new"
      assert {:ok, %{size: 3}} = Storage.head("k", o)
      Storage.delete!("k", o)
      assert {:error, :not_found} = Storage.get("k", o)
      refute Storage.exists?("k", o)
    end
  end

  describe "restart" do
    @tag timeout: 180_000
    test "cache entries outlive the VM, and the byte budget holds after it" do
      o = opts(cache_memory_max_bytes: 0, cache_disk_max_bytes: 10_000_000)
      keys = for i <- 1..20, do: "r/#{i}"

      # VM 1 reads every key once, filling the disk tier, and exits.
      run_vm!("""
      o = #{inspect(o)}
      for k <- #{inspect(keys)} do
        {:ok, _} = Micelio.Storage.put(k, :binary.copy(k, 1000), o)
        {:ok, _} = Micelio.Storage.get(k, o)
      end
      {:ok, %{disk: %{entries: 20}}} = Micelio.Storage.stats(o)
      """)

      # VM 2 starts with a quarter of the budget: it evicts down to it.
      small = Keyword.put(o, :cache_disk_max_bytes, 20_000)

      out =
        run_vm!("""
        {:ok, s} = Micelio.Storage.stats(#{inspect(small)})
        IO.puts("entries=\#{s.disk.entries} bytes=\#{s.disk.bytes}")
        """)

      [_, entries, bytes] = Regex.run(~r/entries=(\d+) bytes=(\d+)/, out)
      {entries, bytes} = {String.to_integer(entries), String.to_integer(bytes)}
      assert entries in 1..19 and bytes <= 20_000

      # This VM: the origin is gone, yet the surviving entries are served from disk.
      File.rm_rf!(o[:local_path])
      served = Enum.filter(keys, &match?({:ok, _}, Storage.get(&1, small)))
      assert length(served) == entries
      assert Enum.all?(served, &(Storage.get!(&1, small) == :binary.copy(&1, 1000)))
      missing = 20 - entries
      assert %{disk: %{hits: hits}, origin: %{fetches: ^missing}} = stats(small)
      assert hits >= entries

      # While this VM holds the cache directory, another OS process may not.
      out = run_vm!("IO.inspect(Micelio.Storage.stats(#{inspect(small)}))")
      assert out =~ "in use by another OS process"
    end
  end

  defp run_vm!(script) do
    ebin = :code.lib_dir(:micelio_storage, :ebin)
    code = "Application.ensure_all_started(:micelio_storage)\n" <> script

    {out, status} =
      System.cmd(System.find_executable("elixir"), ["-pa", to_string(ebin), "-e", code],
        stderr_to_stdout: true
      )

    assert status == 0, out
    out
  end
end
