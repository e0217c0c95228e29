# 1 GiB upload and download: ours (put_file / get_file) vs curl on a
# presigned URL and object_store's multipart upload and parallel ranged
# download (a small Rust program built here from crates.io), and a stream
# read to its end beside curl writing to /dev/null, all on one
# SeaweedFS started here. Peak BEAM memory and OS RSS are sampled through
# each of our transfers and compared with the bound parts x part size x 1.5.
# Run: mix bench large   (or: mix run bench/large.exs)
Code.require_file("../test/support/seaweed.ex", __DIR__)
Code.require_file("support/bench.ex", __DIR__)
Code.require_file("support/object_store.ex", __DIR__)
alias Micelio.Storage
alias Micelio.Storage.Test.Seaweed

:ok = Seaweed.ensure_started()
opts = Seaweed.opts(s3_prefix: "large#{System.unique_integer([:positive])}/")
rounds = String.to_integer(System.get_env("LARGE_ROUNDS", "3"))
mib = 1_048_576
size_mib = String.to_integer(System.get_env("LARGE_MIB", "1024"))
size = size_mib * mib
bound = 4 * 8 * mib * 1.5

curl = System.find_executable("curl") || raise "curl is needed for the baseline"
baseline = Micelio.Bench.ObjectStore.build!()

tmp = Path.join(System.tmp_dir!(), "micelio_bench_large")
File.mkdir_p!(tmp)
src = Path.join(tmp, "src.bin")

unless File.exists?(src) and File.stat!(src).size == size do
  File.open!(src, [:write, :raw], fn f ->
    for _ <- 1..size_mib, do: IO.binwrite(f, :crypto.strong_rand_bytes(mib))
  end)
end

rss = fn ->
  [_, resident | _] = File.read!("/proc/self/statm") |> String.split()
  String.to_integer(resident) * 4096
end

# Seconds of `fun`, the peak growth of BEAM memory and RSS during it, and
# the CPU seconds the VM used. Memory is sampled every 50 ms: every 5 ms,
# the sampler's own wake-ups (and the schedulers' spinning after each) were
# about 1.2 CPU seconds per GiB of a 6-second upload, counted as ours.
sampled = fn fun ->
  :erlang.garbage_collect()
  {beam0, rss0} = {:erlang.memory(:total), rss.()}
  parent = self()

  sampler =
    spawn(fn ->
      loop = fn loop, {b, r} ->
        receive do
          :stop -> send(parent, {:peak, b, r})
        after
          50 -> loop.(loop, {max(b, :erlang.memory(:total)), max(r, rss.())})
        end
      end

      loop.(loop, {beam0, rss0})
    end)

  cpu0 = Micelio.Bench.own_cpu_seconds()
  t0 = System.monotonic_time(:microsecond)
  :ok = fun.()
  secs = (System.monotonic_time(:microsecond) - t0) / 1.0e6
  cpu = Micelio.Bench.own_cpu_seconds() - cpu0
  send(sampler, :stop)

  receive do
    {:peak, b, r} -> {secs, b - beam0, r - rss0, cpu}
  end
end

s3 = fn -> {Seaweed.endpoint(), Seaweed.bucket(), Seaweed.access_key(), Seaweed.secret_key()} end

object_store = fn op, key, file ->
  {endpoint, bucket, access, secret} = s3.()

  {[secs, rss_kib], cpu} =
    Micelio.Bench.ObjectStore.run_with_cpu!(baseline, [
      op,
      endpoint,
      bucket,
      opts[:s3_prefix] <> key,
      file,
      access,
      secret
    ])

  {String.to_float(secs), String.to_integer(rss_kib) * 1024, cpu}
end

# curl's wall seconds and CPU seconds.
curl_time = fn args ->
  {out, cpu} = Micelio.Bench.cmd_with_cpu(curl, ["-s", "-f", "-w", "%{time_total}" | args])
  {String.to_float(String.trim(out)), cpu}
end

# Connections and the store are warm before anything is timed.
Storage.put!("warm", "x", opts)
out = Path.join(tmp, "out.bin")

# Before each timed transfer the page cache's dirty data is flushed (`sync`,
# untimed), so no transfer pays for the writeback of the one before it; and
# each round rotates which client goes first.
settle = fn -> System.cmd("sync", []) end

uploads = [
  ours: fn ->
    {secs, beam, rss, cpu} =
      sampled.(fn ->
        {:ok, _} = Storage.put_file("ours", src, opts)
        :ok
      end)

    %{up: secs, beam: beam, rss: rss, up_cpu: cpu}
  end,
  curl: fn ->
    {:ok, put_url} = Storage.presigned_url("curl", opts ++ [method: :put])
    {secs, cpu} = curl_time.(["-o", "/dev/null", "-T", src, put_url])
    %{curl_up: secs, curl_up_cpu: cpu}
  end,
  object_store: fn ->
    {secs, rss, cpu} = object_store.("put", "object_store", src)
    %{os_up: secs, os_rss: rss, os_up_cpu: cpu}
  end
]

downloads = [
  ours: fn ->
    {secs, beam, rss, cpu} =
      sampled.(fn ->
        {:ok, _} = Storage.get_file("ours", out, opts)
        :ok
      end)

    %{down: secs, beam: beam, rss: rss, down_cpu: cpu}
  end,
  curl: fn ->
    {:ok, get_url} = Storage.presigned_url("ours", opts)
    {secs, cpu} = curl_time.(["-o", out, get_url])
    %{curl_down: secs, curl_down_cpu: cpu}
  end,
  object_store: fn ->
    {secs, rss, cpu} = object_store.("get", "ours", out)
    %{os_down: secs, os_rss: rss, os_down_cpu: cpu}
  end
]

# A stream read to its end, beside curl writing the same object to
# /dev/null: neither writes a file, so this is the network side alone.
streams = [
  ours: fn ->
    {secs, beam, rss, cpu} =
      sampled.(fn ->
        ^size = "ours" |> Storage.stream(opts) |> Enum.reduce(0, &(byte_size(&1) + &2))
        :ok
      end)

    %{stream: secs, stream_beam: beam, stream_rss: rss, stream_cpu: cpu}
  end,
  curl: fn ->
    {:ok, get_url} = Storage.presigned_url("ours", opts)
    {secs, cpu} = curl_time.(["-o", "/dev/null", get_url])
    %{curl_null: secs, curl_null_cpu: cpu}
  end
]

rotate = fn list, n -> Enum.drop(list, rem(n, 3)) ++ Enum.take(list, rem(n, 3)) end

# Figures of one round; memory is the larger of the two directions.
merge = fn maps ->
  Enum.reduce(maps, %{}, fn m, acc -> Map.merge(acc, m, fn _k, a, b -> max(a, b) end) end)
end

results =
  for round <- 1..rounds do
    IO.puts("round #{round}/#{rounds}")
    # Every object the downloads read exists before the first of them.
    if round == 1, do: Storage.put_file!("ours", src, opts)

    figures =
      for {_name, step} <-
            rotate.(uploads, round - 1) ++
              rotate.(downloads, round - 1) ++ rotate.(streams, round - 1) do
        File.rm(out)
        settle.()
        step.()
      end

    File.rm(out)
    merge.(figures)
  end

median = fn list ->
  sorted = Enum.sort(list)
  Enum.at(sorted, div(length(sorted), 2))
end

m = fn key -> median.(Enum.map(results, & &1[key])) end
mbs = fn secs -> size / 1.0e6 / secs end
fmt = fn x -> :erlang.float_to_binary(x / 1, decimals: 1) end

IO.puts(
  "\n#{size_mib} MiB object, median of #{rounds} interleaved rounds (MB/s, higher is better)"
)

IO.puts("ratio = our MB/s / the better baseline's MB/s (target >= 0.90)\n")

for {label, ours, c, o} <- [
      {"upload", :up, :curl_up, :os_up},
      {"download", :down, :curl_down, :os_down}
    ] do
  {ours_mbs, curl_mbs, os_mbs} = {mbs.(m.(ours)), mbs.(m.(c)), mbs.(m.(o))}
  best = max(curl_mbs, os_mbs)

  IO.puts(
    String.pad_trailing(label, 9) <>
      "ours #{fmt.(ours_mbs)}  curl #{fmt.(curl_mbs)}  object_store #{fmt.(os_mbs)}  ratio #{:erlang.float_to_binary(ours_mbs / best, decimals: 2)}"
  )
end

gib = size / (1024 * mib)
cpu = fn key -> :erlang.float_to_binary(m.(key) / gib, decimals: 2) end

IO.puts("\nCPU seconds per GiB (user + system of the client process; the server's not counted)")

for {label, ours, c, o} <- [
      {"upload", :up_cpu, :curl_up_cpu, :os_up_cpu},
      {"download", :down_cpu, :curl_down_cpu, :os_down_cpu}
    ] do
  IO.puts(
    String.pad_trailing(label, 9) <>
      "ours #{cpu.(ours)}  curl #{cpu.(c)}  object_store #{cpu.(o)}"
  )
end

stream_mbs = mbs.(m.(:stream))

IO.puts(
  String.pad_trailing("stream", 9) <>
    "ours #{cpu.(:stream_cpu)}  curl to /dev/null #{cpu.(:curl_null_cpu)}  " <>
    "(MB/s: ours #{fmt.(stream_mbs)}, curl #{fmt.(mbs.(m.(:curl_null)))}, " <>
    "ratio #{:erlang.float_to_binary(stream_mbs / mbs.(m.(:curl_null)), decimals: 2)}; " <>
    "peak growth BEAM #{fmt.(Enum.max(Enum.map(results, & &1.stream_beam)) / mib)} MiB, " <>
    "RSS #{fmt.(Enum.max(Enum.map(results, & &1.stream_rss)) / mib)} MiB)"
)

peak_beam = Enum.max(Enum.map(results, & &1.beam))
peak_rss = Enum.max(Enum.map(results, & &1.rss))
os_rss = Enum.max(Enum.map(results, & &1.os_rss))

IO.puts(
  "\npeak growth during our transfers: BEAM #{fmt.(peak_beam / mib)} MiB, RSS #{fmt.(peak_rss / mib)} MiB " <>
    "(bound #{fmt.(bound / mib)} MiB: 4 parts x 8 MiB x 1.5) -> " <>
    if(peak_beam <= bound and peak_rss <= bound, do: "within", else: "OVER")
)

IO.puts("object_store program's peak RSS (whole process): #{fmt.(os_rss / mib)} MiB")
