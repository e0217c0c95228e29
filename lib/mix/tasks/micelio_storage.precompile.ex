defmodule Mix.Tasks.MicelioStorage.Precompile do
  @shortdoc "Builds the precompiled NIF artifacts and writes their checksum file"

  @moduledoc """
  Release tooling for the precompiled NIFs (see the README's "Installing").

      mix micelio_storage.precompile             # build what this machine can, pack, write the checksum file
      mix micelio_storage.precompile --release   # the same, refusing a checksum file that misses a promised target
      mix micelio_storage.precompile --check     # verify the checksum file against the artifacts

  It builds, for each promised target this machine has a Rust standard
  library for (`--target T` picks some), the NIF for each NIF version, and
  packs it as `libmicelio_storage-v<version>-nif-<nif>-<target>.so.tar.gz`
  in `_build/precompiled/` (`--out DIR`). Linux gnu targets are built with
  cargo-zigbuild against the glibc baseline (#{MicelioStorage.Precompiled.glibc_baseline()}), and
  every such library is checked with `objdump -T`: one that needs a newer
  glibc symbol is refused.

  Then it writes `checksum-Micelio.Storage.Native.exs` at the project's root
  (`--checksum-file PATH`) from every artifact of this version in the output
  directory, including those gathered from other machines (the release
  workflow's jobs), and names the promised targets that have none.

  Options:

    * `--target T` (repeatable): build only these targets
    * `--skip-build`: build nothing, pack nothing; write the checksum file
      from the artifacts already in the output directory
    * `--no-checksum`: build and pack only (one job of the release workflow)
    * `--release`: refuse to write a checksum file that misses any promised
      target (for publishing)
    * `--check`: write nothing; verify that every artifact the checksum file
      lists is in the output directory with that checksum (with `--release`,
      also that every promised target is listed)
  """
  use Mix.Task

  alias MicelioStorage.Precompiled

  @switches [
    release: :boolean,
    check: :boolean,
    out: :string,
    checksum_file: :string,
    target: :keep,
    skip_build: :boolean,
    no_checksum: :boolean
  ]

  @impl true
  def run(args) do
    {opts, rest, invalid} = OptionParser.parse(args, strict: @switches)

    if rest != [] or invalid != [],
      do: Mix.raise("unexpected arguments: #{inspect(rest ++ Enum.map(invalid, &elem(&1, 0)))}")

    root = Path.dirname(Mix.Project.project_file())
    out = Path.expand(opts[:out] || Path.join(Mix.Project.build_path(), "../precompiled"), root)

    checksum_file = Path.expand(opts[:checksum_file] || Precompiled.checksum_file_name(), root)

    version = Mix.Project.config()[:version]

    if opts[:check] do
      check(checksum_file, out, version, opts[:release] == true)
    else
      File.mkdir_p!(out)

      unless opts[:skip_build] do
        targets = opts |> Keyword.get_values(:target) |> default_targets()

        for target <- targets,
            nif <- Precompiled.nif_versions(),
            do: build(root, out, version, nif, target)
      end

      unless opts[:no_checksum],
        do: write_checksums(checksum_file, out, version, opts[:release] == true)
    end
  end

  # Every promised target this machine has a standard library for.
  defp default_targets([]) do
    buildable = Enum.filter(Precompiled.targets(), &std_installed?/1)

    skipped = Precompiled.targets() -- buildable

    if skipped != [],
      do:
        Mix.shell().info(
          "==> no Rust standard library here for: #{Enum.join(skipped, ", ")} (not built)"
        )

    buildable
  end

  defp default_targets(targets) do
    for target <- targets do
      target in Precompiled.targets() ||
        Mix.raise("#{target} is not a promised target: #{Enum.join(Precompiled.targets(), ", ")}")

      target
    end
  end

  defp std_installed?(target) do
    {sysroot, 0} = System.cmd("rustc", ["--print", "sysroot"])
    File.dir?(Path.join([String.trim(sysroot), "lib", "rustlib", target, "lib"]))
  end

  defp build(root, out, version, nif, target) do
    Mix.shell().info("==> building #{target} (NIF #{nif})")
    target_dir = Path.join(Mix.Project.build_path(), "../micelio_storage_cargo") |> Path.expand()

    {cmd, args} = cargo_command(target)

    args =
      args ++
        [
          "--release",
          "--manifest-path",
          Path.join(root, "Cargo.toml"),
          "-p",
          Precompiled.crate(),
          "--target-dir",
          target_dir
        ]

    case System.cmd(cmd, args, into: IO.stream(:stdio, :line), stderr_to_stdout: true) do
      {_, 0} -> :ok
      {_, code} -> Mix.raise("#{cmd} #{Enum.join(args, " ")} failed (exit #{code})")
    end

    built = Path.join([target_dir, target, "release", "lib#{Precompiled.crate()}.#{ext(target)}"])
    if String.ends_with?(target, "-linux-gnu"), do: check_glibc!(built)

    library = Precompiled.library_name(version, nif, target)
    tarball = Path.join(out, Precompiled.artifact_name(version, nif, target))
    tmp = tarball <> ".part"

    :ok =
      :erl_tar.create(
        String.to_charlist(tmp),
        [{String.to_charlist(library), String.to_charlist(built)}],
        [:compressed]
      )

    File.rename!(tmp, tarball)
    Mix.shell().info("==> packed #{Path.relative_to_cwd(tarball)}")
  end

  # Linux gnu: cargo-zigbuild links against the glibc baseline. Other Linux
  # targets (musl) go through zig too; macOS builds on macOS with cargo.
  defp cargo_command(target) do
    cond do
      String.ends_with?(target, "-linux-gnu") ->
        {zigbuild!(), ["zigbuild", "--target", "#{target}.#{Precompiled.glibc_baseline()}"]}

      String.contains?(target, "-linux-") ->
        {zigbuild!(), ["zigbuild", "--target", target]}

      true ->
        {System.find_executable("cargo") || Mix.raise("cargo is not on PATH"),
         ["build", "--target", target]}
    end
  end

  defp zigbuild! do
    System.find_executable("cargo-zigbuild") ||
      Mix.raise(
        "cargo-zigbuild is not on PATH: `cargo install --locked cargo-zigbuild` and " <>
          "`pip install ziglang` (zig) build Linux artifacts against an old glibc"
      )

    System.find_executable("cargo") || Mix.raise("cargo is not on PATH")
  end

  defp ext(target), do: if(String.contains?(target, "apple"), do: "dylib", else: "so")

  # The newest glibc symbol version the library needs must not pass the
  # baseline, or machines with that glibc could not load it.
  defp check_glibc!(library) do
    needed = glibc_versions(library)
    baseline = Precompiled.glibc_baseline()
    too_new = Enum.filter(needed, &(version_list(&1) > version_list(baseline)))

    if too_new != [] do
      Mix.raise(
        "#{library} needs glibc #{Enum.join(too_new, ", ")}, newer than the baseline #{baseline}"
      )
    end

    Mix.shell().info(
      "==> glibc: needs at most #{Enum.max_by(needed, &version_list/1, fn -> "none" end)} " <>
        "(baseline #{baseline})"
    )
  end

  @doc false
  # The glibc symbol versions a library needs, from `objdump -T`.
  def glibc_versions(library) do
    {dump, 0} = System.cmd("objdump", ["-T", library])

    ~r/GLIBC_(\d+(?:\.\d+)+)/
    |> Regex.scan(dump, capture: :all_but_first)
    |> List.flatten()
    |> Enum.uniq()
  end

  defp version_list(v), do: v |> String.split(".") |> Enum.map(&String.to_integer/1)

  defp artifacts(out, version) do
    prefix = "lib#{Precompiled.crate()}-v#{version}-nif-"

    out
    |> File.ls()
    |> case do
      {:ok, files} -> files
      {:error, _} -> []
    end
    |> Enum.filter(&(String.starts_with?(&1, prefix) and String.ends_with?(&1, ".so.tar.gz")))
    |> Enum.sort()
  end

  defp promised(version) do
    for target <- Precompiled.targets(), nif <- Precompiled.nif_versions() do
      {target, Precompiled.artifact_name(version, nif, target)}
    end
  end

  defp write_checksums(path, out, version, release?) do
    present = artifacts(out, version)
    missing = for {target, name} <- promised(version), name not in present, do: target

    if release? and missing != [] do
      Mix.raise(
        "--release: no artifact for the promised targets #{Enum.join(missing, ", ")} in #{out}; " <>
          "the checksum file was not written"
      )
    end

    if present == [], do: Mix.raise("no artifact of v#{version} in #{out}")

    checksums = Map.new(present, &{&1, Precompiled.sha256_file(Path.join(out, &1))})
    File.write!(path, Precompiled.checksum_file_text(checksums, Enum.uniq(missing)))
    Mix.shell().info("==> wrote #{Path.relative_to_cwd(path)}: #{length(present)} artifact(s)")

    if missing != [],
      do: Mix.shell().info("==> not built here: #{Enum.join(Enum.uniq(missing), ", ")}")
  end

  defp check(path, out, version, release?) do
    File.regular?(path) || Mix.raise("no checksum file at #{path}")
    listed = Precompiled.read_checksums(path)

    problems =
      for {name, expected} <- Enum.sort(listed),
          problem = artifact_problem(Path.join(out, name), expected),
          do: "#{name}: #{problem}"

    missing = for {target, name} <- promised(version), not Map.has_key?(listed, name), do: target

    problems =
      if release? and missing != [],
        do: problems ++ ["promised targets not listed: #{Enum.join(missing, ", ")}"],
        else: problems

    if problems != [] do
      Mix.raise(
        "#{Path.basename(path)} does not match the artifacts:\n  " <> Enum.join(problems, "\n  ")
      )
    end

    Mix.shell().info("==> #{map_size(listed)} artifact(s) match #{Path.basename(path)}")
  end

  defp artifact_problem(file, expected) do
    cond do
      not File.regular?(file) -> "missing from #{Path.dirname(file)}"
      (got = Precompiled.sha256_file(file)) != expected -> "expected #{expected}, got #{got}"
      true -> nil
    end
  end
end
