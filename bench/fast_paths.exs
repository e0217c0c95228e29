# Fast paths: what resolving the configuration costs on the fastest calls,
# and how late the BEAM's schedulers run while large local puts go on.
# Run: mix run bench/fast_paths.exs   (or: mix bench fast_paths)
#
# Every figure is the median of 5 rounds, ours interleaved with the
# baseline in each round.
Code.require_file("support/bench.ex", __DIR__)
alias Micelio.Bench
alias Micelio.Storage

root = Path.join(System.tmp_dir!(), "micelio_bench_fast_#{System.unique_integer([:positive])}")
rounds = 5
median = fn xs -> xs |> Enum.sort() |> Enum.at(div(length(xs), 2)) end
app_key = Micelio.Storage
saved_app = Application.get_env(:micelio, app_key)

IO.puts(
  "Fast paths (same VM, #{System.schedulers_online()} schedulers), median of #{rounds} rounds"
)

IO.puts("ratio = our time / the baseline's time (lower is better; the targets are maxima)\n")

ratio_row = fn label, ours, base, target ->
  ratio = ours / base

  IO.puts(
    String.pad_trailing(label, 46) <>
      String.pad_leading(:erlang.float_to_binary(ours * 1.0, decimals: 3), 10) <>
      String.pad_leading(:erlang.float_to_binary(base * 1.0, decimals: 3), 10) <>
      String.pad_leading(:erlang.float_to_binary(ratio, decimals: 2) <> "x", 8) <>
      "  (target <= #{target}x: #{if ratio <= target, do: "MET", else: "MISSED"})"
  )

  ratio
end

header = fn unit ->
  IO.puts(
    String.pad_trailing("", 46) <>
      String.pad_leading("ours #{unit}", 10) <>
      String.pad_leading("base #{unit}", 10) <> "   ratio"
  )
end

# --- RAM hit, 4 KiB -----------------------------------------------------------
tiered = [
  backend: :tiered,
  origin_backend: :local,
  local_path: Path.join(root, "origin"),
  cache_disk_path: Path.join(root, "cache"),
  cache_memory_max_bytes: 64_000_000
]

Application.put_env(:micelio, app_key, tiered)
Storage.reload()
{:ok, handle} = Storage.open(tiered)
key = "ram/4096"
value = :crypto.strong_rand_bytes(4096)
Storage.put!(key, value)
{:ok, ^value} = Storage.get(key)
bare = :ets.new(:bare, [:set, :public, read_concurrency: true])
:ets.insert(bare, {key, value})

# Each sample times one call; the clock's own p50 (timing an empty call) is
# taken off every figure.
overhead = Bench.timer_overhead()
p50 = fn fun -> max(Bench.percentiles(fun, 100_000, [50])[50] - overhead, 0.001) end

ram =
  for _ <- 1..rounds do
    %{
      ets: p50.(fn -> [{_, _}] = :ets.lookup(bare, key) end),
      plain: p50.(fn -> {:ok, _} = Storage.get(key) end),
      opts: p50.(fn -> {:ok, _} = Storage.get(key, tiered) end),
      # A process's first call with these options: its own remembered
      # resolution is dropped before each call, so the shared table answers.
      opts_first:
        p50.(fn ->
          Process.delete({Micelio.Storage.Resolved, :last})
          {:ok, _} = Storage.get(key, tiered)
        end),
      handle: p50.(fn -> {:ok, _} = Storage.get(key, handle) end)
    }
  end

m = fn rows, field -> median.(Enum.map(rows, & &1[field])) end

IO.puts("RAM hit, 4 KiB, p50 in µs (clock overhead #{overhead} µs taken off)")
header.("µs")
ratio_row.("plain get(key), config in the app env vs :ets", m.(ram, :plain), m.(ram, :ets), 2)
ratio_row.("get(key, opts) vs :ets.lookup", m.(ram, :opts), m.(ram, :ets), 3)
ratio_row.("get(key, handle) vs :ets.lookup", m.(ram, :handle), m.(ram, :ets), 1.1)

IO.puts(
  "  get(key, opts) as a process's first call with them (the shared table): " <>
    "#{Float.round(m.(ram, :opts_first), 3)} µs, " <>
    "#{Float.round(m.(ram, :opts_first) / m.(ram, :ets), 2)}x :ets.lookup"
)

# --- Local GET, 4 KiB ---------------------------------------------------------
local = [backend: :local, local_path: Path.join(root, "local")]
Application.put_env(:micelio, app_key, local)
Storage.reload()
{:ok, local_handle} = Storage.open(local)
Storage.put!("local/4096", value)
{:ok, ^value} = Storage.get("local/4096")

# Each round runs the three in a different order (a dirty-scheduler read is
# sensitive to what ran just before it), in slices of 2,000 calls taking
# turns, so a slow moment of the machine falls on all three alike.
local_calls = [
  handle: fn -> {:ok, _} = Storage.get("local/4096", local_handle) end,
  plain: fn -> {:ok, _} = Storage.get("local/4096") end,
  opts: fn -> {:ok, _} = Storage.get("local/4096", local) end
]

local_rows =
  for round <- 1..rounds do
    order = Enum.drop(local_calls, rem(round, 3)) ++ Enum.take(local_calls, rem(round, 3))

    slices =
      for _ <- 1..10, {name, call} <- order do
        {name, Bench.us_per_op(call, 2_000, 1)}
      end

    Map.new(Keyword.keys(local_calls), fn name ->
      {name, slices |> Keyword.get_values(name) |> Enum.sum() |> Kernel./(10)}
    end)
  end

IO.puts("\nLocal GET, 4 KiB, mean µs per call")
header.("µs")

ratio_row.(
  "plain get(key) vs get(key, handle)",
  m.(local_rows, :plain),
  m.(local_rows, :handle),
  1.15
)

IO.puts(
  "  get(key, opts), for comparison: #{Float.round(m.(local_rows, :opts), 3)} µs, " <>
    "#{Float.round(m.(local_rows, :opts) / m.(local_rows, :handle), 2)}x the handle's time"
)

if saved_app,
  do: Application.put_env(:micelio, app_key, saved_app),
  else: Application.delete_env(:micelio, app_key)

Storage.reload()

# --- Scheduler lateness under 8 MiB local puts ----------------------------------
# A process asks to sleep 1 ms over and over and records how late it wakes,
# while 8 processes write 8 MiB objects: through our local backend, then
# through File.write/2 of the same bytes (the baseline).
big = :crypto.strong_rand_bytes(8 * 1024 * 1024)
lateness_dir = Path.join(root, "late")
File.mkdir_p!(lateness_dir)

lateness = fn writer ->
  parent = self()

  sleeper =
    spawn(fn ->
      receive do: (:go -> :ok)

      lates =
        Stream.repeatedly(fn ->
          t0 = System.monotonic_time(:microsecond)
          Process.sleep(1)
          System.monotonic_time(:microsecond) - t0 - 1000
        end)
        |> Enum.take(600)

      send(parent, {:lates, lates})
    end)

  writers =
    for w <- 1..8 do
      spawn(fn ->
        receive do: (:go -> :ok)
        Enum.each(1..1_000_000, fn i -> writer.(w, i) end)
      end)
    end

  Enum.each([sleeper | writers], &send(&1, :go))
  lates = receive(do: ({:lates, lates} -> lates))
  Enum.each(writers, &Process.exit(&1, :kill))
  sorted = Enum.sort(lates) |> List.to_tuple()
  n = tuple_size(sorted)
  %{p99: elem(sorted, div(n * 99, 100)) / 1000, max: elem(sorted, n - 1) / 1000}
end

ours_write = fn w, i -> {:ok, _} = Storage.put("late/#{w}/#{rem(i, 4)}", big, local) end
file_write = fn w, i -> :ok = File.write(Path.join(lateness_dir, "#{w}-#{rem(i, 4)}"), big) end

late =
  for _ <- 1..rounds do
    %{ours: lateness.(ours_write), file: lateness.(file_write)}
  end

IO.puts("\nScheduler lateness of a 1 ms sleep while 8 processes put 8 MiB local objects (ms)")
header.("ms")
ours_p99 = median.(Enum.map(late, & &1.ours.p99))
file_p99 = median.(Enum.map(late, & &1.file.p99))
ratio_row.("p99 lateness, ours vs File.write", ours_p99, file_p99, 1.5)

IO.puts(
  "  max lateness, median over rounds: ours #{median.(Enum.map(late, & &1.ours.max))} ms, " <>
    "File.write #{median.(Enum.map(late, & &1.file.max))} ms"
)

File.rm_rf!(root)
