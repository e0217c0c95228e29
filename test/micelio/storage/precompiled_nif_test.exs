defmodule Micelio.Storage.PrecompiledNifTest do
  # Installing without Rust. The release tooling builds this machine's
  # artifact (cargo-zigbuild, glibc baseline) and its checksum file; a copy
  # of the library laid out as its Hex package ships (checksum file
  # included) is the dependency of a host mix project, compiled with no
  # cargo on PATH against artifacts served by a real :inets httpd on
  # loopback.
  use ExUnit.Case, async: false

  alias MicelioStorage.Precompiled

  @moduletag timeout: 900_000

  @lib_root Path.expand("../../..", __DIR__)

  setup_all do
    root = Micelio.Storage.Test.Tmp.dir!("precompiled")
    artifacts = Path.join(root, "artifacts")
    checksum = Path.join(root, Precompiled.checksum_file_name())

    # The release tooling, as a maintainer runs it (output dir and checksum
    # path moved out of the checkout).
    Mix.Tasks.MicelioStorage.Precompile.run([
      "--out",
      artifacts,
      "--checksum-file",
      checksum
    ])

    version = Mix.Project.config()[:version]
    target = Precompiled.host_target()
    name = Precompiled.artifact_name(version, "2.16", target)
    assert File.regular?(Path.join(artifacts, name))

    served = Path.join(root, "served")
    File.mkdir_p!(served)
    File.cp!(Path.join(artifacts, name), Path.join(served, name))

    {:ok, httpd} =
      :inets.start(:httpd,
        port: 0,
        server_name: ~c"artifacts",
        server_root: String.to_charlist(root),
        document_root: String.to_charlist(served),
        bind_address: {127, 0, 0, 1}
      )

    port = :httpd.info(httpd)[:port]
    on_exit(fn -> :inets.stop(:httpd, httpd) end)

    package = package_copy(Path.join(root, "package"), checksum)
    host = host_project(Path.join(root, "host"), package)

    %{
      root: root,
      artifacts: artifacts,
      name: name,
      served: served,
      base_url: "http://127.0.0.1:#{port}",
      package: package,
      host: host,
      target: target
    }
  end

  setup ctx do
    # Every case starts from a package with no NIF installed and an empty
    # download cache of its own.
    File.rm_rf!(Path.join(ctx.package, "priv"))
    File.cp!(Path.join(ctx.artifacts, ctx.name), Path.join(ctx.served, ctx.name))
    %{cache: Micelio.Storage.Test.Tmp.dir!("precompiled-cache")}
  end

  test "no cargo on PATH: the artifact is downloaded, checked, cached and loaded", ctx do
    started = System.monotonic_time(:millisecond)
    {out, status} = host_mix(ctx, ["compile"], base_url: ctx.base_url)
    seconds = (System.monotonic_time(:millisecond) - started) / 1000
    assert status == 0, out
    assert out =~ "downloading #{ctx.base_url}/#{ctx.name}"
    refute out =~ "Compiling micelio_storage_core"
    IO.puts("\n[precompiled] host compile with a precompiled NIF: #{Float.round(seconds, 1)} s")

    assert File.regular?(Path.join(ctx.cache, ctx.name))
    assert File.regular?(Path.join(ctx.package, "priv/native/libmicelio_storage.so"))

    {out, status} = host_mix(ctx, ["run", "check.exs"], base_url: ctx.base_url)
    assert status == 0, out
    assert out =~ "HOST CHECKS PASSED"

    # Up to date: the next compile downloads nothing (the server is not even
    # asked: the base URL now points nowhere).
    {out, status} = host_mix(ctx, ["compile"], base_url: closed_url())
    assert status == 0, out
    refute out =~ "downloading"
  end

  test "a cache hit works with the server down", ctx do
    File.cp!(Path.join(ctx.artifacts, ctx.name), Path.join(ctx.cache, ctx.name))
    {out, status} = host_mix(ctx, ["run", "check.exs"], base_url: closed_url())
    assert status == 0, out
    assert out =~ "from the cache"
    assert out =~ "HOST CHECKS PASSED"
  end

  test "a tampered or truncated artifact is refused and never installed", ctx do
    served = Path.join(ctx.served, ctx.name)
    good = File.read!(served)
    expected = Precompiled.read_checksums(checksum_of(ctx))[ctx.name]

    flipped =
      binary_part(good, 0, 100) <>
        <<Bitwise.bxor(:binary.at(good, 100), 0xFF)>> <>
        binary_part(good, 101, byte_size(good) - 101)

    for bad <- [flipped, binary_part(good, 0, div(byte_size(good), 2))] do
      File.write!(served, bad)
      {out, status} = host_mix(ctx, ["compile"], base_url: ctx.base_url)
      assert status != 0, out
      assert out =~ ctx.name
      assert out =~ "does not match its checksum"
      assert out =~ expected
      assert out =~ "sha256:" <> Base.encode16(:crypto.hash(:sha256, bad), case: :lower)
      refute File.exists?(Path.join(ctx.package, "priv/native/libmicelio_storage.so"))
      # Nothing bad is kept for next time either.
      assert File.ls!(ctx.cache) == []
    end

    # A damaged copy in the cache is not trusted: the good one is fetched.
    File.write!(Path.join(ctx.cache, ctx.name), flipped)
    File.write!(served, good)
    {out, status} = host_mix(ctx, ["compile"], base_url: ctx.base_url)
    assert status == 0, out
    assert out =~ "downloading"
  end

  test "the server is down and nothing is cached: retries, then says what to do", ctx do
    url = closed_url()
    {out, status} = host_mix(ctx, ["compile"], base_url: url)
    assert status != 0
    assert out =~ "attempt 1 failed"
    assert out =~ "attempt 2 failed"
    assert out =~ "after #{Precompiled.attempts()} attempts"
    assert out =~ "#{url}/#{ctx.name}"
    assert out =~ "MICELIO_STORAGE_BASE_URL"
    assert out =~ "MICELIO_STORAGE_BUILD=1"
    refute File.exists?(Path.join(ctx.package, "priv/native/libmicelio_storage.so"))
  end

  test "no artifact for the target and no cargo: the error names both ways out", ctx do
    {out, status} =
      host_mix(ctx, ["compile"], base_url: ctx.base_url, target: "riscv64gc-unknown-linux-gnu")

    assert status != 0
    assert out =~ "riscv64gc-unknown-linux-gnu"
    assert out =~ "NIF version #{:erlang.system_info(:nif_version)}"
    assert out =~ "cargo was not found on PATH"
    assert out =~ "install Rust"
    assert out =~ "MICELIO_STORAGE_BASE_URL"
  end

  test "no artifact for the target and cargo on PATH: built from source, saying why", ctx do
    {out, status} =
      host_mix(ctx, ["run", "check.exs"],
        base_url: ctx.base_url,
        target: "riscv64gc-unknown-linux-gnu",
        cargo: true
      )

    assert status == 0, out
    assert out =~ "no precompiled NIF for target riscv64gc-unknown-linux-gnu"
    assert out =~ "building the NIF with cargo"
    assert out =~ "HOST CHECKS PASSED"
  end

  test "MICELIO_STORAGE_BUILD=1 forces a build, and needs cargo", ctx do
    {out, status} = host_mix(ctx, ["compile"], base_url: ctx.base_url, build: true)
    assert status != 0
    assert out =~ "MICELIO_STORAGE_BUILD is set"
    assert out =~ "cargo was not found on PATH"
    refute out =~ "downloading"
  end

  test "a source checkout with an up-to-date library compiles without cargo", ctx do
    checksum = checksum_of(ctx)
    saved = File.read!(checksum)
    File.rm!(checksum)

    try do
      library = Path.join(ctx.package, "priv/native/libmicelio_storage.so")
      File.mkdir_p!(Path.dirname(library))

      File.cp!(
        Path.join(:code.priv_dir(:micelio_storage), "native/libmicelio_storage.so"),
        library
      )

      {out, status} = host_mix(ctx, ["run", "check.exs"], base_url: closed_url())
      assert status == 0, out
      assert out =~ "HOST CHECKS PASSED"

      # A source newer than the library: it must be built, and cannot be.
      source = Path.join(ctx.package, "native/micelio_storage/src/lib.rs")
      File.touch!(source, System.os_time(:second) + 5)
      {out, status} = host_mix(ctx, ["compile"], base_url: closed_url())
      assert status != 0
      assert out =~ "its Rust sources changed since"
      File.touch!(source, System.os_time(:second) - 3600)
    after
      File.write!(checksum, saved)
    end
  end

  test "mix release of the host app carries the downloaded NIF and starts", ctx do
    {out, status} = host_mix(ctx, ["release", "--overwrite"], base_url: ctx.base_url, env: "prod")
    assert status == 0, out

    bin = Path.join(ctx.host, "_build/prod/rel/host/bin/host")

    script =
      ~s|{:ok, _} = Application.ensure_all_started(:micelio_storage); | <>
        ~s|{:ok, "k"} = Micelio.Storage.put("k", "v", backend: :memory); IO.puts("RELEASE STARTED")|

    {out, status} =
      System.cmd(bin, ["eval", script], env: clean_env(false), stderr_to_stdout: true)

    assert status == 0, out
    assert out =~ "RELEASE STARTED"

    assert [_] =
             Path.wildcard(
               Path.join(ctx.host, "_build/prod/rel/host/lib/micelio_storage-*/priv/native/*.so")
             )
  end

  test "the artifact needs no glibc newer than the baseline", ctx do
    {:ok, [{_, library}]} =
      :erl_tar.extract(String.to_charlist(Path.join(ctx.artifacts, ctx.name)), [
        :memory,
        :compressed
      ])

    path = Path.join(ctx.root, "unpacked.so")
    File.write!(path, library)
    needed = Mix.Tasks.MicelioStorage.Precompile.glibc_versions(path)
    assert needed != []
    baseline = version(Precompiled.glibc_baseline())
    assert Enum.all?(needed, &(version(&1) <= baseline)), inspect(needed)
    # Debian 10 and RHEL 8 ship glibc 2.28, Ubuntu 20.04 2.31.
    assert baseline <= version("2.28")
  end

  test "--check verifies the checksum file; --release refuses a missing target", ctx do
    checksum = checksum_of(ctx)
    out = ctx.artifacts

    Mix.Tasks.MicelioStorage.Precompile.run(["--check", "--out", out, "--checksum-file", checksum])

    assert_raise Mix.Error, ~r/promised targets not listed/, fn ->
      Mix.Tasks.MicelioStorage.Precompile.run([
        "--check",
        "--release",
        "--out",
        out,
        "--checksum-file",
        checksum
      ])
    end

    other = Path.join(ctx.root, "release-checksum.exs")

    assert_raise Mix.Error, ~r/--release: no artifact for the promised targets/, fn ->
      Mix.Tasks.MicelioStorage.Precompile.run([
        "--release",
        "--skip-build",
        "--out",
        out,
        "--checksum-file",
        other
      ])
    end

    refute File.exists?(other)

    # An artifact that changed after the checksum file was written.
    copy = Path.join(ctx.root, "check-copy")
    File.mkdir_p!(copy)
    File.write!(Path.join(copy, ctx.name), "not the artifact")

    assert_raise Mix.Error, ~r/expected sha256:/, fn ->
      Mix.Tasks.MicelioStorage.Precompile.run([
        "--check",
        "--out",
        copy,
        "--checksum-file",
        checksum
      ])
    end
  end

  test "the release workflow builds every promised target" do
    workflow = File.read!(Path.join(@lib_root, ".github/workflows/release.yml"))
    listed = Regex.scan(~r/^\s+- target: (\S+)/m, workflow, capture: :all_but_first)
    assert Enum.sort(List.flatten(listed)) == Enum.sort(Precompiled.targets())
    assert workflow =~ "mix micelio_storage.precompile --release --skip-build"
  end

  ## Helpers

  defp checksum_of(ctx), do: Path.join(ctx.package, Precompiled.checksum_file_name())

  # The library as its package ships: code, Rust sources, checksum file.
  defp package_copy(dir, checksum) do
    File.mkdir_p!(Path.join(dir, "native"))

    for path <- ~w(mix.exs lib mix Cargo.toml Cargo.lock) do
      File.cp_r!(Path.join(@lib_root, path), Path.join(dir, path))
    end

    for crate <- ~w(micelio_storage micelio_storage_core) do
      File.mkdir_p!(Path.join([dir, "native", crate]))

      for path <- ~w(src Cargo.toml),
          do:
            File.cp_r!(
              Path.join([@lib_root, "native", crate, path]),
              Path.join([dir, "native", crate, path])
            )
    end

    File.cp!(checksum, Path.join(dir, Precompiled.checksum_file_name()))
    dir
  end

  defp host_project(dir, package) do
    File.mkdir_p!(dir)

    File.write!(Path.join(dir, "mix.exs"), """
    defmodule Host.MixProject do
      use Mix.Project

      def project,
        do: [app: :host, version: "0.1.0", deps: [{:micelio_storage, path: #{inspect(package)}}]]

      def application, do: [extra_applications: [:logger]]
    end
    """)

    File.write!(Path.join(dir, "check.exs"), """
    {:ok, _} = Application.ensure_all_started(:micelio_storage)
    dir = Path.join(System.tmp_dir!(), "host-check-\#{System.unique_integer([:positive])}")

    for opts <- [[backend: :memory], [backend: :local, local_path: dir]] do
      {:ok, "a/b.txt"} = Micelio.Storage.put("a/b.txt", "hello", opts)
      {:ok, "hello"} = Micelio.Storage.get("a/b.txt", opts)
      {:ok, %{size: 5, etag: etag}} = Micelio.Storage.head("a/b.txt", opts)
      {:error, :precondition_failed} = Micelio.Storage.put_if_none_match("a/b.txt", "x", opts)
      {:ok, "a/b.txt"} = Micelio.Storage.put_if_match("a/b.txt", "hello!", etag, opts)
      {:ok, ["a/b.txt"]} = Micelio.Storage.list("a/", opts)
      {:ok, "c.txt"} = Micelio.Storage.copy("a/b.txt", "c.txt", opts)
      {:ok, "hello!"} = Micelio.Storage.get("c.txt", opts)
      {:ok, _} = Micelio.Storage.delete_many(["a/b.txt", "c.txt"], opts)
      {:error, :not_found} = Micelio.Storage.get("a/b.txt", opts)
    end

    File.rm_rf!(dir)
    IO.puts("HOST CHECKS PASSED")
    """)

    dir
  end

  defp host_mix(ctx, args, opts) do
    env =
      clean_env(Keyword.get(opts, :cargo, false)) ++
        [
          {"MIX_ENV", Keyword.get(opts, :env, "dev")},
          {"MICELIO_STORAGE_BASE_URL", opts[:base_url]},
          {"MICELIO_STORAGE_CACHE_DIR", ctx.cache},
          {"MICELIO_STORAGE_TARGET", opts[:target]},
          {"MICELIO_STORAGE_BUILD", if(opts[:build], do: "1")},
          # With cargo, share the checkout's cargo cache: only the two
          # crates of the package's path are compiled again.
          {"MICELIO_STORAGE_CARGO_TARGET_DIR",
           if(opts[:cargo], do: Path.join(@lib_root, "_build/micelio_storage_cargo"))}
        ]

    System.cmd("mix", args, cd: ctx.host, env: env, stderr_to_stdout: true)
  end

  # PATH without any directory that holds cargo (unless asked), and none of
  # this test run's Mix settings.
  defp clean_env(cargo?) do
    path =
      System.get_env("PATH")
      |> String.split(":")
      |> Enum.reject(&(not cargo? and File.exists?(Path.join(&1, "cargo"))))
      |> Enum.join(":")

    unless cargo?, do: refute(System.find_executable("cargo") && cargo_in?(path))

    [{"PATH", path}] ++
      for var <-
            ~w(MIX_EXS MIX_BUILD_PATH MIX_DEPS_PATH MIX_LOCKFILE MIX_TARGET RUSTUP_TOOLCHAIN),
          do: {var, nil}
  end

  defp cargo_in?(path),
    do: path |> String.split(":") |> Enum.any?(&File.exists?(Path.join(&1, "cargo")))

  defp closed_url do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    "http://127.0.0.1:#{port}"
  end

  defp version(v), do: v |> String.split(".") |> Enum.map(&String.to_integer/1)
end
