defmodule MicelioStorage.MixProject do
  use Mix.Project

  @version "0.1.0"

  def project do
    [
      app: :micelio_storage,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:micelio_cargo] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: deps(),
      aliases: aliases(),
      description:
        "One storage API for Elixir apps (local, S3, tiered cache) with a Rust engine.",
      docs: [main: "Micelio.Storage"]
    ]
  end

  def application do
    [
      extra_applications: [:logger, :crypto, :inets, :ssl, :public_key],
      mod: {Micelio.Storage.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  # Hex packages, declared as a Hex user declares them. Where hex.pm cannot
  # be reached (`HEX_OFFLINE=1`, which bin/test sets when it does not
  # answer), each comes from the offline mirror of unpacked releases
  # (`MICELIO_HEX_MIRROR`, default `../shared/vendor`) as a path dependency;
  # anywhere else Mix fetches it from Hex as usual.
  defp deps do
    Enum.map([{:stream_data, "~> 1.1", only: :test, runtime: false}], &from_mirror_when_offline/1)
  end

  defp from_mirror_when_offline({name, requirement, opts}) do
    mirror = System.get_env("MICELIO_HEX_MIRROR") || Path.expand("../shared/vendor", __DIR__)
    dir = Path.join(mirror, Atom.to_string(name))

    if System.get_env("HEX_OFFLINE") in ["1", "true"] and File.dir?(dir),
      do: {name, Keyword.merge(opts, path: dir, override: true)},
      else: {name, requirement, opts}
  end

  # `mix bench` is this project's own: an alias, so it does not appear in
  # the apps that depend on the library (a task defined in this file would).
  defp aliases, do: [bench: &bench/1]

  # Runs benchmarks: `mix bench` runs every `bench/*.exs`, `mix bench local`
  # runs `bench/local.exs`. Each prints our figures beside a baseline
  # measured in the same VM, with the ratio.
  defp bench(names) do
    Mix.Task.run("app.start")

    files =
      case names do
        [] -> Path.wildcard("bench/*.exs") |> Enum.sort()
        names -> Enum.map(names, &"bench/#{Path.basename(&1, ".exs")}.exs")
      end

    for file <- files do
      File.exists?(file) || Mix.raise("no such bench: #{file}")
      Mix.shell().info("==> #{file}")
      # Like `mix run`: `require_file` compiles the script's closures, where
      # `eval_file` interprets them (about 1 µs per call, more than a cache hit).
      Code.require_file(file)
    end
  end
end

defmodule Mix.Tasks.Compile.MicelioCargo do
  @moduledoc """
  Builds the Rust crate with cargo and installs the NIF into `priv/native/`.

  It lives in `mix.exs` because a task under `lib/` cannot be found yet when a
  clean checkout (or a host app's `deps/`) compiles for the first time. The
  cargo target directory sits under `_build/`, shared by every `MIX_ENV`;
  `MICELIO_STORAGE_CARGO_TARGET_DIR` moves it (to share one cargo cache).
  """
  use Mix.Task.Compiler

  @crate "micelio_storage"

  @impl true
  def run(_args) do
    project_dir = Path.dirname(Mix.Project.project_file())

    target_dir =
      System.get_env("MICELIO_STORAGE_CARGO_TARGET_DIR") ||
        Path.join(Path.dirname(Mix.Project.build_path()), "micelio_storage_cargo")

    cargo = System.find_executable("cargo") || Mix.raise(missing_cargo())

    args = [
      "build",
      "--release",
      "--manifest-path",
      Path.join(project_dir, "Cargo.toml"),
      "-p",
      @crate,
      "--target-dir",
      target_dir
    ]

    case run_cargo(cargo, args) do
      0 -> install(Path.join([target_dir, "release", "lib#{@crate}.so"]), project_dir)
      code -> Mix.raise("cargo build of #{@crate} failed (exit #{code})")
    end
  end

  # Cargo's output, line by line as it comes, except its "Finished" line
  # when nothing was compiled: every mix command of a host app runs this
  # compiler, and a line saying nothing happened is noise.
  defp run_cargo(cargo, args) do
    port =
      Port.open({:spawn_executable, cargo}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 8192},
        args: args
      ])

    relay(port, false, "")
  end

  defp relay(port, compiled?, partial) do
    receive do
      {^port, {:data, {:noeol, part}}} ->
        relay(port, compiled?, partial <> part)

      {^port, {:data, {:eol, rest}}} ->
        line = partial <> rest
        compiled? = compiled? or line =~ ~r/^\s*Compiling\b/
        unless not compiled? and line =~ ~r/^\s*Finished\b/, do: IO.puts(line)
        relay(port, compiled?, "")

      {^port, {:exit_status, code}} ->
        code
    end
  end

  # Copies the library beside the code through a temp file and a rename: a
  # running VM may have the old .so mapped, and overwriting it in place would
  # corrupt that VM.
  defp install(built, project_dir) do
    dest_dir = Path.join([project_dir, "priv", "native"])
    dest = Path.join(dest_dir, "lib#{@crate}.so")
    File.mkdir_p!(dest_dir)
    Mix.Project.build_structure()

    if same_file?(built, dest) do
      {:noop, []}
    else
      tmp = dest <> ".tmp#{System.unique_integer([:positive])}"
      File.cp!(built, tmp)
      File.rename!(tmp, dest)
      {:ok, []}
    end
  end

  defp same_file?(a, b) do
    with {:ok, sa} <- File.stat(a), {:ok, sb} <- File.stat(b), true <- sa.size == sb.size do
      File.read!(a) == File.read!(b)
    else
      _ -> false
    end
  end

  defp missing_cargo do
    "cargo was not found on PATH. micelio_storage builds a Rust NIF: install the Rust " <>
      "toolchain (https://rustup.rs, rustc 1.91 or later) and run mix compile again."
  end
end
