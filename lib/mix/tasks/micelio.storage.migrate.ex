defmodule Mix.Tasks.Micelio.Storage.Migrate do
  @shortdoc "Copies every object from one store to another (local, S3, named stores)"
  @moduledoc """
  Copies every object under an optional prefix from one configured store
  to another:

      mix micelio.storage.migrate --from local --to s3 [--prefix P]
      mix micelio.storage.migrate --from s3 --to MyApp.Artifacts --concurrency 16 --verify

  Each side is the app's usual configuration (app config and environment
  variables) with `backend` set to that side's value (`local`, `s3`,
  `tiered`), or a named store module (`use Micelio.Storage`) with its own
  configuration. S3 to another bucket: make the other bucket a named store.

  Options:

    * `--prefix P` - only keys starting with `P`;
    * `--concurrency N` - objects copied at once (default 4);
    * `--dry-run` - list what would be copied, copy nothing;
    * `--verify` - read each copy back and compare SHA-256 hashes.

  The run is resumable: keys whose size and content hash already match at
  the target are skipped (each copy records its SHA-256 as `sha256`
  metadata). Objects stream through a temp file, so memory stays bounded.
  On a terminal it shows objects, bytes, rate and ETA on one line; without
  one it prints a line every few seconds. Failures are listed at the end
  and the task exits with status 1.

      $ mix micelio.storage.migrate --from local --to s3 --prefix artifacts/
      migrating artifacts/ from local to s3 (1204 objects)
      1204/1204 objects  2.1 GB  88.4 MB/s  ETA 0s
      done: 1180 copied, 24 skipped, 0 failed, 2.1 GB
  """
  use Mix.Task

  alias Micelio.Storage.Migration

  @switches [
    from: :string,
    to: :string,
    prefix: :string,
    concurrency: :integer,
    dry_run: :boolean,
    verify: :boolean
  ]

  @impl true
  def run(args) do
    {opts, _rest, invalid} = OptionParser.parse(args, strict: @switches)
    invalid == [] || Mix.raise("unknown options: #{inspect(invalid)}")
    from = opts[:from] || Mix.raise("--from is required (local, s3, tiered or a store module)")
    to = opts[:to] || Mix.raise("--to is required (local, s3, tiered or a store module)")
    Mix.Task.run("app.start")
    prefix = opts[:prefix] || ""

    with {:ok, source} <- side(from),
         {:ok, target} <- side(to) do
      total = Micelio.Storage.stream_keys(prefix, source) |> Enum.count()
      Mix.shell().info("migrating #{label(prefix)} from #{from} to #{to} (#{total} objects)")
      progress = start_progress(total)

      result =
        Migration.run(source, target,
          prefix: prefix,
          concurrency: opts[:concurrency] || 4,
          dry_run: opts[:dry_run] || false,
          verify: opts[:verify] || false,
          report: fn event -> send(progress, event) end
        )

      send(progress, {:stop, self()})
      receive do: ({:stopped, _} -> :ok)
      finish(result, opts)
    else
      {:error, reason} ->
        Mix.raise("cannot open a side: #{Micelio.Storage.Error.describe(reason)}")
    end
  end

  defp label(""), do: "every object"
  defp label(prefix), do: prefix

  # User input maps to backends through this table, never through the atom
  # table: `String.to_existing_atom("s3")` fails in a VM that has not yet
  # loaded the code naming `:s3`.
  @backends %{"local" => :local, "s3" => :s3, "tiered" => :tiered, "memory" => :memory}

  # A backend name, or a store module.
  defp side(name) when is_map_key(@backends, name),
    do: Micelio.Storage.open(backend: Map.fetch!(@backends, name))

  defp side(name) do
    module = Module.concat([name])

    if Code.ensure_loaded?(module) and function_exported?(module, :__micelio_storage__, 1),
      do: module.open([]),
      else:
        {:error, {:invalid_config, :backend, "#{name} is neither a backend nor a store module"}}
  end

  defp finish({:ok, summary}, opts) do
    verb = if opts[:dry_run], do: "would copy", else: "copied"

    Mix.shell().info(
      "done: #{summary.copied} #{verb}, #{summary.skipped} skipped, " <>
        "#{length(summary.failed)} failed, #{bytes(summary.bytes)}"
    )

    if summary.failed != [] do
      for {key, reason} <- summary.failed,
          do:
            Mix.shell().error(
              "  failed #{inspect(key)}: #{Micelio.Storage.Error.describe(reason)}"
            )

      exit({:shutdown, 1})
    end
  end

  defp finish({:error, reason}, _opts) do
    Mix.shell().error("migration failed: #{Micelio.Storage.Error.describe(reason)}")
    exit({:shutdown, 1})
  end

  defp start_progress(total) do
    tty? = match?({:ok, _}, :io.columns())
    start = System.monotonic_time(:millisecond)

    spawn_link(fn ->
      progress_loop(%{total: total, done: 0, bytes: 0, start: start, tty?: tty?, shown: start})
    end)
  end

  defp progress_loop(state) do
    receive do
      {:object, _key, _outcome, bytes} ->
        state = %{state | done: state.done + 1, bytes: state.bytes + bytes}
        now = System.monotonic_time(:millisecond)
        every = if state.tty?, do: 200, else: 5_000

        if now - state.shown >= every or state.done == state.total do
          show(state, now)
          progress_loop(%{state | shown: now})
        else
          progress_loop(state)
        end

      {:stop, from} ->
        if state.tty?, do: IO.write("\n")
        send(from, {:stopped, self()})
    end
  end

  defp show(state, now) do
    secs = max(now - state.start, 1) / 1000
    rate = state.bytes / secs
    left = state.total - state.done
    eta = if state.done > 0, do: round(secs / state.done * left), else: 0

    line =
      "#{state.done}/#{state.total} objects  #{bytes(state.bytes)}  #{bytes(round(rate))}/s  ETA #{eta}s"

    if state.tty?, do: IO.write("\r\e[K" <> line), else: IO.puts(line)
  end

  defp bytes(n) when n >= 1_000_000_000, do: "#{Float.round(n / 1.0e9, 1)} GB"
  defp bytes(n) when n >= 1_000_000, do: "#{Float.round(n / 1.0e6, 1)} MB"
  defp bytes(n) when n >= 1_000, do: "#{Float.round(n / 1.0e3, 1)} kB"
  defp bytes(n), do: "#{n} B"
end
