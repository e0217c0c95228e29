# Tiered backend: RAM hits vs ETS in the same VM, disk hits vs File.read,
# and the hit ratio of the RAM tier's S3-FIFO vs LRU on Zipf + scans.
# Run: mix run bench/tiered.exs   (or: mix bench tiered)
Code.require_file("support/bench.ex", __DIR__)
Code.require_file("support/ets_lru.ex", __DIR__)
alias Micelio.Bench
alias Micelio.Bench.EtsLru
alias Micelio.Storage

root = Path.join(System.tmp_dir!(), "micelio_bench_tiered_#{System.unique_integer([:positive])}")

tiered = fn name, extra ->
  dir = Path.join(root, name)

  Keyword.merge(
    [
      backend: :tiered,
      origin_backend: :local,
      local_path: Path.join(dir, "origin"),
      cache_disk_path: Path.join(dir, "cache")
    ],
    extra
  )
end

IO.puts("Tiered backend vs ETS caches (same VM, #{System.schedulers_online()} schedulers)")
IO.puts("ratio = baseline time / our time: above 1.00 we are faster\n")

# --- RAM hits -------------------------------------------------------------
{:ok, ram} = Storage.open(tiered.("ram", cache_memory_max_bytes: 64_000_000))
bare = :ets.new(:bare, [:set, :public, read_concurrency: true])
lru = EtsLru.new(10_000)

# Each sample times one call; the clock read itself costs about as much as an
# ETS lookup, so its own p50 (timing an empty call) is measured and taken off
# every figure. Raw figures are printed too.
overhead = Bench.timer_overhead()
net = fn us -> max(us - overhead, 0.001) end

IO.puts("RAM hit latency in µs per call, p50 / p99 of 200,000 single timed calls")
IO.puts("(clock overhead, p50 of timing an empty call: #{overhead} µs, subtracted in the table)")

pct = fn fun -> Bench.percentiles(fun, 200_000, [50, 99]) end

ram_rows =
  for {label, size} <- [{"4 KiB", 4096}, {"1 MiB", 1_048_576}] do
    value = :crypto.strong_rand_bytes(size)
    key = "ram/#{size}"
    Storage.put!(key, value, ram)
    {:ok, ^value} = Storage.get(key, ram)
    :ets.insert(bare, {key, value})
    EtsLru.put(lru, key, value)

    ours = pct.(fn -> {:ok, _} = Storage.get(key, ram) end)
    ets = pct.(fn -> [{_, _}] = :ets.lookup(bare, key) end)
    cache = pct.(fn -> {:ok, _} = EtsLru.get(lru, key) end)
    opts_list = Map.to_list(ram.config)
    ours_opts = pct.(fn -> {:ok, _} = Storage.get(key, opts_list) end)

    IO.puts(
      "  #{label} raw: ours #{ours[50]} / #{ours[99]}   bare :ets.lookup #{ets[50]} / #{ets[99]}   " <>
        "ETS+LRU cache #{cache[50]} / #{cache[99]}   ours with keyword opts (config resolved per call) " <>
        "#{ours_opts[50]} / #{ours_opts[99]}"
    )

    mean_ours = Bench.us_per_op(fn -> {:ok, _} = Storage.get(key, ram) end, 300_000)
    mean_ets = Bench.us_per_op(fn -> [{_, _}] = :ets.lookup(bare, key) end, 300_000)
    mean_cache = Bench.us_per_op(fn -> {:ok, _} = EtsLru.get(lru, key) end, 300_000)

    Bench.header()
    Bench.row("  p50 #{label} vs bare :ets.lookup", net.(ours[50]), net.(ets[50]))
    Bench.row("  p50 #{label} vs ETS+LRU cache", net.(ours[50]), net.(cache[50]))
    Bench.row("  p99 #{label} vs ETS+LRU cache", net.(ours[99]), net.(cache[99]))
    Bench.row("  mean #{label} vs bare :ets.lookup", mean_ours, mean_ets, "(loop, no clock)")
    Bench.row("  mean #{label} vs ETS+LRU cache", mean_ours, mean_cache, "(loop, no clock)")
    {label, net.(ours[50]), net.(ets[50]), net.(cache[50])}
  end

# --- Telemetry on the hit path -----------------------------------------------
# With :telemetry loaded (as in every Phoenix app) a RAM hit sends no event
# (stats count it); the only added work is the loaded-module check. Measured
# here with a stand-in :telemetry that drops events, interleaved with runs
# without it, median of 5 rounds.
IO.puts("\nRAM hit, 4 KiB, p50 through a handle: :telemetry loaded vs not (5 interleaved rounds)")
tkey = "ram/4096"

stand_in = """
defmodule :telemetry do
  def execute(_event, _measurements, _metadata), do: :ok
end
"""

median = fn xs -> xs |> Enum.sort() |> Enum.at(div(length(xs), 2)) end

rounds =
  for _ <- 1..5 do
    without = pct.(fn -> {:ok, _} = Storage.get(tkey, ram) end)[50]
    Code.compile_string(stand_in)
    with_t = pct.(fn -> {:ok, _} = Storage.get(tkey, ram) end)[50]
    ets_p50 = pct.(fn -> [{_, _}] = :ets.lookup(bare, tkey) end)[50]
    :code.purge(:telemetry)
    :code.delete(:telemetry)
    {net.(without), net.(with_t), net.(ets_p50)}
  end

{t_without, t_with, t_ets} =
  {median.(Enum.map(rounds, &elem(&1, 0))), median.(Enum.map(rounds, &elem(&1, 1))),
   median.(Enum.map(rounds, &elem(&1, 2)))}

Bench.header()
Bench.row("  hit with :telemetry vs without", t_with, t_without)
Bench.row("  hit with :telemetry vs bare :ets.lookup", t_with, t_ets)

IO.puts("\nRAM hit throughput, 4 KiB values over 1,000 hot keys (ops/s, all processes)")
hot = for i <- 1..1_000, do: "hot/#{i}"
value4k = :crypto.strong_rand_bytes(4096)

for k <- hot do
  Storage.put!(k, value4k, ram)
  {:ok, _} = Storage.get(k, ram)
  EtsLru.put(lru, k, value4k)
end

hot_t = List.to_tuple(hot)

throughput = fn procs, fun ->
  per_proc = 200_000
  parent = self()

  pids =
    for p <- 1..procs do
      spawn_link(fn ->
        receive do: (:go -> :ok)

        for i <- 1..per_proc, do: fun.(elem(hot_t, rem(i * 7 + p, 1_000)))
        send(parent, :done)
      end)
    end

  t0 = System.monotonic_time(:nanosecond)
  Enum.each(pids, &send(&1, :go))
  for _ <- pids, do: receive(do: (:done -> :ok))
  elapsed = System.monotonic_time(:nanosecond) - t0
  procs * per_proc / (elapsed / 1.0e9)
end

Bench.header()

tp =
  for procs <- [1, 2] do
    ours = throughput.(procs, fn k -> {:ok, _} = Storage.get(k, ram) end)
    cache = throughput.(procs, fn k -> {:ok, _} = EtsLru.get(lru, k) end)
    Bench.row("  #{procs} scheduler(s) busy vs ETS+LRU", 1.0e6 / ours, 1.0e6 / cache)
  end

# --- Disk hits --------------------------------------------------------------
IO.puts("\nDisk hit latency (RAM tier off) vs File.read of a file of the same size")
{:ok, disk} = Storage.open(tiered.("disk", cache_memory_max_bytes: 0))
Bench.header()

for {label, size, n} <- [{"4 KiB", 4096, 20_000}, {"1 MiB", 1_048_576, 300}] do
  value = :crypto.strong_rand_bytes(size)
  key = "disk/#{size}"
  Storage.put!(key, value, disk)
  {:ok, ^value} = Storage.get(key, disk)
  raw = Path.join(root, "raw-#{size}")
  File.write!(raw, value)
  ours = Bench.us_per_op(fn -> {:ok, _} = Storage.get(key, disk) end, n)
  read = Bench.us_per_op(fn -> {:ok, _} = File.read(raw) end, n)
  Bench.row("  disk hit #{label} vs File.read", ours, read)
end

# --- Hit ratio ---------------------------------------------------------------
IO.puts("\nHit ratio, RAM tier (S3-FIFO) vs LRU with the same number of entries")
keys = 10_000
alpha = 0.9
requests = 200_000
scan_every = 10_000
scan_len = 3_000
value1k = :crypto.strong_rand_bytes(1024)

{:ok, hr} =
  Storage.open(tiered.("ratio", cache_memory_max_bytes: 1_300_000, cache_disk_max_bytes: 0))

origin = hr.config.local_path

write_origin = fn key ->
  path = Path.join(origin, key)
  File.mkdir_p!(Path.dirname(path))
  File.write!(path, value1k)
end

for i <- 1..keys, do: write_origin.("z/#{i}")

# Zipf sampling by inverse CDF.
cdf =
  1..keys
  |> Enum.map_reduce(0.0, fn i, acc ->
    {acc + 1 / :math.pow(i, alpha), acc + 1 / :math.pow(i, alpha)}
  end)
  |> elem(0)
  |> List.to_tuple()

total = elem(cdf, keys - 1)

sample = fn ->
  u = :rand.uniform() * total

  search = fn search, lo, hi ->
    if lo >= hi do
      lo
    else
      mid = div(lo + hi, 2)
      if elem(cdf, mid) < u, do: search.(search, mid + 1, hi), else: search.(search, lo, mid)
    end
  end

  "z/#{search.(search, 0, keys - 1) + 1}"
end

:rand.seed(:exsss, {7, 7, 7})

trace =
  Enum.flat_map(1..div(requests, scan_every), fn round ->
    zipf = for _ <- 1..scan_every, do: sample.()
    scan = for i <- 1..scan_len, do: "scan/#{round}/#{i}"
    Enum.each(scan, write_origin)
    # The scan lands in the middle of the round's Zipf requests.
    {a, b} = Enum.split(zipf, div(scan_every, 2))
    a ++ scan ++ b
  end)

# One key fill tells how many entries the RAM budget holds.
Enum.each(trace, fn k -> {:ok, _} = Storage.get(k, hr) end)
{:ok, s} = Storage.stats(hr)
ours_ratio = s.memory.hits / (s.memory.hits + s.memory.misses)
capacity = max(s.memory.entries, 1)

lru_sim = EtsLru.new(capacity)

lru_hits =
  Enum.reduce(trace, 0, fn k, hits ->
    case EtsLru.get(lru_sim, k) do
      {:ok, _} ->
        hits + 1

      :miss ->
        EtsLru.put(lru_sim, k, value1k)
        hits
    end
  end)

lru_ratio = lru_hits / length(trace)

IO.puts(
  "  #{length(trace)} requests: Zipf(#{alpha}) over #{keys} keys with a #{scan_len}-key scan every #{scan_every}; " <>
    "1 KiB values; #{capacity} entries fit"
)

IO.puts(
  "  S3-FIFO #{Float.round(ours_ratio * 100, 2)}%  vs  LRU #{Float.round(lru_ratio * 100, 2)}%  " <>
    "(#{:erlang.float_to_binary(ours_ratio / lru_ratio, decimals: 3)}x)"
)

# --- Revalidation ------------------------------------------------------------
# A hit past cache_revalidate_after_ms asks the origin (a stat on a local
# origin) before it is served; here every hit does (0 ms), against a plain
# RAM hit and a full origin read (no cache tiers), 5 interleaved rounds.
IO.puts("\nRevalidating hit (4 KiB, local origin) vs plain RAM hit vs origin GET")
{:ok, reval} = Storage.open(tiered.("reval", cache_revalidate_after_ms: 0))

{:ok, uncached} =
  Storage.open(tiered.("uncached", cache_memory_max_bytes: 0, cache_disk_max_bytes: 0))

value = :crypto.strong_rand_bytes(4096)
for h <- [reval, uncached, ram], do: Storage.put!("rv", value, h) && Storage.get!("rv", h)

reval_rounds =
  for _ <- 1..5 do
    {Bench.us_per_op(fn -> {:ok, _} = Storage.get("rv", reval) end, 5_000, 1),
     Bench.us_per_op(fn -> {:ok, _} = Storage.get("rv", ram) end, 200_000, 1),
     Bench.us_per_op(fn -> {:ok, _} = Storage.get("rv", uncached) end, 5_000, 1)}
  end

{reval_us, plain_us, origin_us} =
  {median.(Enum.map(reval_rounds, &elem(&1, 0))), median.(Enum.map(reval_rounds, &elem(&1, 1))),
   median.(Enum.map(reval_rounds, &elem(&1, 2)))}

Bench.header()
Bench.row("  revalidating hit vs plain RAM hit", reval_us, plain_us)
Bench.row("  revalidating hit vs origin GET", reval_us, origin_us)

# --- Cross-node invalidation --------------------------------------------------
# Two connected VMs (OTP :peer) with tiered caches over one local origin:
# from a put on this node to the moment the other node's get returns the new
# value (it polls; both read the same OS clock).
IO.puts("\nCross-node invalidation latency (put here -> new value read on a peer node)")

# The poller runs on the peer: its module is loaded there from this VM.
# (Defined before distribution starts: the compiler keeps pids of its own.)
{:module, poller, poller_bin, _} =
  defmodule Micelio.Bench.Poller do
    @moduledoc false
    # Reads `key` (caching it), says so, then polls until `want` shows.
    def run(me, key, want, opts) do
      {:ok, _} = Micelio.Storage.get(key, opts)
      send(me, :polling)
      poll(me, key, want, opts)
    end

    defp poll(me, key, want, opts) do
      case Micelio.Storage.get(key, opts) do
        {:ok, ^want} -> send(me, {:seen, System.system_time(:microsecond)})
        _ -> poll(me, key, want, opts)
      end
    end
  end

unless Node.alive?() do
  System.cmd("epmd", ["-daemon"])
  {:ok, _} = Node.start(:"bench_#{System.unique_integer([:positive])}@127.0.0.1", :longnames)
end

Node.set_cookie(:micelio_bench)

peer_args = [~c"-setcookie", ~c"micelio_bench"] ++ Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

{:ok, peer, peer_node} =
  :peer.start_link(%{
    name: :"bench_peer_#{System.unique_integer([:positive])}",
    host: ~c"127.0.0.1",
    longnames: true,
    connection: :standard_io,
    args: peer_args
  })

{:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:micelio_storage])
true = Node.connect(peer_node)
here = tiered.("x-a", [])
there = Keyword.put(tiered.("x-b", []), :local_path, here[:local_path])
Storage.put!("x", "0", here)
{:ok, "0"} = :peer.call(peer, Storage, :get, ["x", there])

{:module, _} = :peer.call(peer, :code, :load_binary, [poller, ~c"poller.ex", poller_bin])

samples =
  for i <- 1..200 do
    want = Integer.to_string(i)
    :erpc.cast(peer_node, poller, :run, [self(), "x", want, there])

    receive do: (:polling -> :ok)
    t0 = System.system_time(:microsecond)
    Storage.put!("x", want, here)
    receive do: ({:seen, t1} -> t1 - t0)
  end

sorted = Enum.sort(samples)
p50 = Enum.at(sorted, div(length(sorted), 2))
p99 = Enum.at(sorted, div(length(sorted) * 99, 100))

IO.puts(
  "  p50 #{p50} us, p99 #{p99} us, max #{List.last(sorted)} us over #{length(sorted)} writes " <>
    "(the put's own time included)"
)

:peer.stop(peer)

# --- Targets ---------------------------------------------------------------
IO.puts("")
{_, ours4k, ets4k, cache4k} = List.keyfind(ram_rows, "4 KiB", 0)
vs_ets = ours4k / ets4k
vs_cache = cache4k / ours4k

Bench.target(
  "4 KiB RAM hit p50 <= 1.5x bare :ets.lookup (got #{Float.round(vs_ets, 2)}x)",
  vs_ets <= 1.5
)

Bench.target(
  "4 KiB RAM hit p50 >= 4x faster than ETS+LRU (got #{Float.round(vs_cache, 2)}x)",
  vs_cache >= 4
)

Bench.target("hit ratio above LRU's", ours_ratio > lru_ratio)

Bench.target(
  "cross-node invalidation p50 well under 100 ms (got #{Float.round(p50 / 1000, 2)} ms)",
  p50 < 100_000
)

_ = tp

File.rm_rf!(root)
