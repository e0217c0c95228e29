# Local backend vs raw File in the same VM.
# Run: mix run bench/local.exs   (or: mix bench local)
Code.require_file("support/bench.ex", __DIR__)
alias Micelio.Bench
alias Micelio.Storage

root = Path.join(System.tmp_dir!(), "micelio_bench_local_#{System.unique_integer([:positive])}")
raw = Path.join(root, "raw")
File.mkdir_p!(raw)
opts = [backend: :local, local_path: Path.join(root, "store")]

IO.puts("Local backend vs raw File (same VM, #{System.schedulers_online()} schedulers)")
IO.puts("ratio = baseline time / our time: above 1.00 we are faster\n")
Bench.header()

results =
  for {label, size, n} <- [{"4 KiB", 4096, 20_000}, {"1 MiB", 1_048_576, 300}] do
    value = :crypto.strong_rand_bytes(size)
    key = "bench/#{size}/object"
    path = Path.join(raw, "#{size}.bin")
    Storage.put!(key, value, opts)
    File.write!(path, value)

    put = Bench.us_per_op(fn -> {:ok, _} = Storage.put(key, value, opts) end, n)
    write = Bench.us_per_op(fn -> :ok = File.write(path, value) end, n)
    get = Bench.us_per_op(fn -> {:ok, _} = Storage.get(key, opts) end, n)
    read = Bench.us_per_op(fn -> {:ok, _} = File.read(path) end, n)
    head = Bench.us_per_op(fn -> {:ok, _} = Storage.head(key, opts) end, n)
    stat = Bench.us_per_op(fn -> {:ok, _} = File.stat(path) end, n)

    put_ratio = Bench.row("put #{label} (atomic) vs File.write", put, write)
    get_ratio = Bench.row("get #{label} vs File.read", get, read)
    Bench.row("head #{label} vs File.stat", head, stat)
    {label, put_ratio, get_ratio}
  end

# list: 1,000 keys in 10 directories vs a recursive File.ls walk.
for i <- 1..1_000, do: Storage.put!("list/d#{rem(i, 10)}/k#{i}", "x", opts)
list_root = Path.join([root, "store", "list"])

walk = fn walk, dir ->
  dir
  |> File.ls!()
  |> Enum.flat_map(fn name ->
    p = Path.join(dir, name)
    if File.dir?(p), do: walk.(walk, p), else: [p]
  end)
end

list = Bench.us_per_op(fn -> {:ok, _} = Storage.list("list/", opts) end, 50)
ls = Bench.us_per_op(fn -> walk.(walk, list_root) |> Enum.sort() end, 50)
Bench.row("list 1,000 keys vs File.ls walk", list, ls)

IO.puts("")
{_, put4k, get4k} = List.keyfind(results, "4 KiB", 0)
Bench.target("4 KiB get >= 0.90x File.read speed (got #{Float.round(get4k, 2)}x)", get4k >= 0.9)

Bench.target(
  "4 KiB atomic put <= 1.4x File.write time (got #{Float.round(1 / put4k, 2)}x the time)",
  1 / put4k <= 1.4
)

File.rm_rf!(root)
