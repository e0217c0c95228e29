# Loaded here, not from lib/: the NIF compiler below uses it before this
# project's own modules exist (see Mix.Tasks.Compile.MicelioCargo).
Code.require_file("mix/precompiled.ex", __DIR__)

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
      package: package(),
      docs: [main: "Micelio.Storage"]
    ]
  end

  def application do
    [
      extra_applications: [:logger, :crypto, :inets, :ssl, :public_key],
      mod: {Micelio.Storage.Application, []}
    ]
  end

  # What the Hex package holds: the code, the checksum file of the release's
  # precompiled NIFs, and the Rust sources for a build from source.
  defp package do
    [
      licenses: ["MIT"],
      files: ~w(
        lib mix mix.exs README.md Cargo.toml Cargo.lock priv/static
        native/micelio_storage/src native/micelio_storage/Cargo.toml
        native/micelio_storage_core/src native/micelio_storage_core/Cargo.toml
        checksum-Micelio.Storage.Native.exs
      )
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
    declared = [
      # Integrations, compiled only when the app has them: Micelio.Storage.Plug
      # and the LiveView upload helpers.
      {:plug, "~> 1.14", optional: true},
      {:phoenix_live_view, "~> 1.0.0-rc.7 or ~> 1.0", optional: true},
      # Tests: a real HTTP server, a real Phoenix endpoint, properties.
      # (runtime: false: the tests start them; the library's app file must
      # not list them, a host VM without them would not boot it.)
      {:bandit, "~> 1.5", only: :test, runtime: false},
      {:jason, "~> 1.4", only: :test, runtime: false},
      {:stream_data, "~> 1.1", only: :test, runtime: false}
    ]

    if offline?(), do: Enum.map(declared ++ mirrored_transitive(), &from_mirror/1), else: declared
  end

  # Offline, every package the declared ones depend on must come from the
  # mirror too (Hex would otherwise be asked for it).
  defp mirrored_transitive do
    runtime = ~w(plug_crypto mime telemetry phoenix phoenix_pubsub phoenix_template phoenix_html
                 websock websock_adapter castore)a

    test = ~w(thousand_island hpax)a

    Enum.map(runtime, &{&1, ">= 0.0.0", optional: true}) ++
      Enum.map(test, &{&1, ">= 0.0.0", only: :test, runtime: false})
  end

  defp offline?, do: System.get_env("HEX_OFFLINE") in ["1", "true"] and File.dir?(mirror())

  defp mirror,
    do: System.get_env("MICELIO_HEX_MIRROR") || Path.expand("../shared/vendor", __DIR__)

  defp from_mirror({name, _requirement, opts}),
    do:
      {name, Keyword.merge(opts, path: Path.join(mirror(), Atom.to_string(name)), override: true)}

  # `mix bench` is this project's own: an alias, so it does not appear in
  # the apps that depend on the library (a task defined in this file would).
  defp aliases, do: [bench: &bench/1]

  # Runs benchmarks: `mix bench` runs every `bench/*.exs`, `mix bench local`
  # runs `bench/local.exs`. Each prints our figures beside a baseline
  # measured in the same VM, with the ratio.
  defp bench(names) do
    Mix.Task.run("app.start")
    # As in an app that has it (it comes with Plug): events go through spans.
    {:ok, _} = Application.ensure_all_started(:telemetry)

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
  Installs the NIF into `priv/native/`: a precompiled library checked
  against `checksum-Micelio.Storage.Native.exs`, or a build with cargo.

  - As a dependency whose package ships the checksum file, the library for
    this machine's target is taken from the download cache or downloaded
    (see `MicelioStorage.Precompiled`), checked and installed; no Rust is
    needed. Without an artifact for the target, cargo builds it when it is
    on PATH.
  - In a source checkout (this repository, a git dependency: no checksum
    file), or with `MICELIO_STORAGE_BUILD=1`, cargo builds it. Without cargo,
    a library already built and newer than every source file is used.

  It lives in `mix.exs` because a task under `lib/` cannot be found yet when a
  clean checkout (or a host app's `deps/`) compiles for the first time. The
  cargo target directory sits under `_build/`, shared by every `MIX_ENV`;
  `MICELIO_STORAGE_CARGO_TARGET_DIR` moves it (to share one cargo cache).
  """
  use Mix.Task.Compiler

  alias MicelioStorage.Precompiled

  @crate "micelio_storage"

  @impl true
  def run(_args) do
    project_dir = Path.dirname(Mix.Project.project_file())
    dest = Path.join([project_dir, "priv", "native", "lib#{@crate}.so"])
    checksums = Path.join(project_dir, Precompiled.checksum_file_name())

    cond do
      Precompiled.force_build?() ->
        build(project_dir, "MICELIO_STORAGE_BUILD is set")

      root_project?(project_dir) or not File.regular?(checksums) ->
        from_source(project_dir, dest)

      true ->
        case Precompiled.install(checksums, dest) do
          :noop ->
            Mix.Project.build_structure()
            {:noop, []}

          :ok ->
            Mix.Project.build_structure()
            {:ok, []}

          {:no_artifact, why} ->
            build(project_dir, why)
        end
    end
  end

  # This project compiled as itself, not as a dependency: its own deps/ is
  # the one in use.
  defp root_project?(project_dir),
    do: Path.expand(Mix.Project.deps_path()) == Path.join(project_dir, "deps")

  # A source checkout: cargo decides what is stale. Without cargo, a library
  # newer than every source file is up to date.
  defp from_source(project_dir, dest) do
    cond do
      System.find_executable("cargo") ->
        build(project_dir, nil)

      up_to_date?(project_dir, dest) ->
        Mix.Project.build_structure()
        {:noop, []}

      true ->
        Mix.raise(cannot_build("the NIF is not built, or its Rust sources changed since"))
    end
  end

  defp up_to_date?(project_dir, dest) do
    with {:ok, %{mtime: built}} <- File.stat(dest, time: :posix) do
      sources =
        Enum.flat_map(
          ~w(native/*/src/**/*.rs native/*/Cargo.toml Cargo.toml Cargo.lock),
          &Path.wildcard(Path.join(project_dir, &1))
        )

      Enum.all?(sources, fn source -> File.stat!(source, time: :posix).mtime <= built end)
    else
      _ -> false
    end
  end

  defp build(project_dir, why) do
    cargo = System.find_executable("cargo") || Mix.raise(cannot_build(why))
    if why, do: Mix.shell().info("==> micelio_storage: #{why}: building the NIF with cargo")

    target_dir =
      System.get_env("MICELIO_STORAGE_CARGO_TARGET_DIR") ||
        Path.join(Path.dirname(Mix.Project.build_path()), "micelio_storage_cargo")

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
    # The library is no longer the precompiled artifact it may have been.
    File.rm(dest <> ".artifact")

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

  defp cannot_build(why) do
    target = Precompiled.host_target()
    nif = List.to_string(:erlang.system_info(:nif_version))

    """
    micelio_storage cannot install its NIF for target #{target} (NIF version #{nif}):
    #{why || "it must be built from source"}, and cargo was not found on PATH.
    Two ways out:
      1. install Rust (https://rustup.rs, rustc 1.91 or later) and compile again:
         the NIF is then built from source (MICELIO_STORAGE_BUILD=1 forces that);
      2. use a precompiled NIF for #{target}: a package release that ships
         #{Precompiled.checksum_file_name()} listing it, fetched from its release
         page or a mirror (MICELIO_STORAGE_BASE_URL) or the download cache
         (MICELIO_STORAGE_CACHE_DIR).
    """
  end
end
