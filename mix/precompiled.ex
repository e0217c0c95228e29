defmodule MicelioStorage.Precompiled do
  @moduledoc false
  # Precompiled NIFs: which artifact a machine needs, where it comes from,
  # and how it is checked before it is installed.
  #
  # This file is loaded by `mix.exs` (a module under `lib/` cannot be found
  # yet when a host app compiles this dependency for the first time), so it
  # uses nothing but Elixir, Mix and OTP.
  #
  # An artifact is `libmicelio_storage-v<version>-nif-<nif>-<target>.so.tar.gz`
  # holding one file, the library under the same name without `.tar.gz`.
  # `checksum-Micelio.Storage.Native.exs`, written by
  # `mix micelio_storage.precompile` and shipped in the package, maps each
  # artifact name to `"sha256:<hex>"`; nothing that does not match it is
  # ever unpacked.

  @crate "micelio_storage"

  @checksum_file "checksum-Micelio.Storage.Native.exs"

  # The targets a release promises: the matrix of
  # .github/workflows/release.yml builds each (a test keeps the two equal).
  @targets ~w(
    x86_64-unknown-linux-gnu
    aarch64-unknown-linux-gnu
    x86_64-unknown-linux-musl
    aarch64-unknown-linux-musl
    x86_64-apple-darwin
    aarch64-apple-darwin
  )

  # NIF versions built. A library built for 2.16 loads on OTP 25 and every
  # later release (the NIF API only grows), so one is enough.
  @nif_versions ["2.16"]

  # Linux gnu artifacts are linked against this glibc (cargo-zigbuild's
  # `<target>.2.17`): CentOS 7, Debian 10 (2.28), Ubuntu 20.04 (2.31) and
  # RHEL 8 (2.28) all load them.
  @glibc_baseline "2.17"

  @default_base_url "https://github.com/micelio/micelio_storage/releases/download"

  @attempts 3

  def crate, do: @crate
  def checksum_file_name, do: @checksum_file
  def targets, do: @targets
  def nif_versions, do: @nif_versions
  def glibc_baseline, do: @glibc_baseline
  def attempts, do: @attempts

  @doc false
  def artifact_name(version, nif, target),
    do: "lib#{@crate}-v#{version}-nif-#{nif}-#{target}.so.tar.gz"

  @doc false
  def library_name(version, nif, target),
    do: "lib#{@crate}-v#{version}-nif-#{nif}-#{target}.so"

  ## Settings: the environment first, then `config :micelio_storage,
  ## Micelio.Storage.Native, ...` of the app being compiled.

  defp setting(env, key) do
    case System.get_env(env) do
      value when value not in [nil, ""] -> value
      _ -> Application.get_env(:micelio_storage, Micelio.Storage.Native, [])[key]
    end
  end

  @doc false
  # MICELIO_STORAGE_BUILD=1 (or `build: true`): build with cargo.
  def force_build? do
    setting("MICELIO_STORAGE_BUILD", :build) in [true, "1", "true", "yes"]
  end

  @doc false
  def base_url do
    version = Mix.Project.config()[:version]
    url = setting("MICELIO_STORAGE_BASE_URL", :base_url) || "#{@default_base_url}/v#{version}"
    String.trim_trailing(url, "/")
  end

  @doc false
  # MICELIO_STORAGE_CACHE_DIR, else the user cache (XDG_CACHE_HOME or
  # ~/.cache on Linux, ~/Library/Caches on macOS).
  def cache_dir do
    setting("MICELIO_STORAGE_CACHE_DIR", :cache_dir) ||
      :filename.basedir(:user_cache, "micelio_storage") |> List.to_string()
  end

  ## This machine

  @doc false
  # The Rust target triple of the running VM (MICELIO_STORAGE_TARGET
  # overrides it, to fetch for another machine).
  def host_target do
    case System.get_env("MICELIO_STORAGE_TARGET") do
      target when target not in [nil, ""] -> target
      _ -> target_of(List.to_string(:erlang.system_info(:system_architecture)))
    end
  end

  @doc false
  def target_of(arch) do
    [cpu | rest] = String.split(arch, "-")
    cpu = if cpu in ["arm64", "aarch64"], do: "aarch64", else: cpu

    cond do
      Enum.any?(rest, &String.starts_with?(&1, "darwin")) -> "#{cpu}-apple-darwin"
      "linux" in rest and musl?(arch) -> "#{cpu}-unknown-linux-musl"
      "linux" in rest -> "#{cpu}-unknown-linux-gnu"
      true -> arch
    end
  end

  defp musl?(arch),
    do: String.contains?(arch, "musl") or Path.wildcard("/lib/ld-musl-*.so.1") != []

  @doc false
  # The newest NIF version built that this VM loads.
  def nif_version do
    host = parse_version(List.to_string(:erlang.system_info(:nif_version)))

    @nif_versions
    |> Enum.filter(&(parse_version(&1) <= host))
    |> Enum.max_by(&parse_version/1, fn -> nil end)
  end

  defp parse_version(v), do: v |> String.split(".") |> Enum.map(&String.to_integer/1)

  ## The checksum file

  @doc false
  def read_checksums(path) do
    {map, _} = Code.eval_file(path)

    if is_map(map),
      do: map,
      else: Mix.raise("#{path} is not a map of artifact names to checksums")
  end

  @doc false
  # The checksum file's text: every artifact with its checksum, sorted, and
  # the promised targets without an artifact named in a comment.
  def checksum_file_text(checksums, missing) do
    lines =
      Enum.map_join(Enum.sort(checksums), "", fn {k, v} ->
        "  #{inspect(k)} => #{inspect(v)},\n"
      end)

    note =
      case missing do
        [] ->
          "# Every promised target is listed.\n"

        missing ->
          "# Not built for this checksum file (no artifact is published for them):\n" <>
            Enum.map_join(missing, "", &"#   #{&1}\n")
      end

    "# Written by `mix micelio_storage.precompile`; do not edit.\n" <>
      note <> "%{\n" <> lines <> "}\n"
  end

  @doc false
  def sha256_file(path) do
    File.stream!(path, [], 65_536)
    |> Enum.reduce(:crypto.hash_init(:sha256), &:crypto.hash_update(&2, &1))
    |> :crypto.hash_final()
    |> Base.encode16(case: :lower)
    |> then(&"sha256:#{&1}")
  end

  ## Fetching and installing

  @doc false
  # Installs the precompiled library for this machine into `dest`, from the
  # cache or the base URL. Returns `:ok`, `:noop` (already installed from
  # that very artifact), `{:no_artifact, why}` when the checksum file has
  # none for this machine, or raises with what to do.
  def install(checksum_path, dest) do
    version = Mix.Project.config()[:version]
    target = host_target()
    nif = nif_version()
    checksums = read_checksums(checksum_path)
    name = nif && artifact_name(version, nif, target)

    case name && Map.fetch(checksums, name) do
      {:ok, expected} ->
        stamp = dest <> ".artifact"

        if File.exists?(dest) and File.read(stamp) == {:ok, "#{name} #{expected}\n"} do
          :noop
        else
          tarball = fetch(name, expected)
          unpack(tarball, library_name(version, nif, target), dest)
          File.write!(stamp, "#{name} #{expected}\n")
          :ok
        end

      _ ->
        {:no_artifact,
         "no precompiled NIF for target #{target} (NIF version " <>
           "#{nif || List.to_string(:erlang.system_info(:nif_version))}) in #{@checksum_file}"}
    end
  end

  # The verified tarball's path in the cache: a cached copy is used when it
  # matches, else the artifact is downloaded, checked, and only then cached.
  defp fetch(name, expected) do
    dir = cache_dir()
    cached = Path.join(dir, name)

    if File.regular?(cached) and sha256_file(cached) == expected do
      Mix.shell().info("==> micelio_storage: using #{name} from the cache #{dir}")
      cached
    else
      url = "#{base_url()}/#{name}"
      Mix.shell().info("==> micelio_storage: downloading #{url}")
      body = download(url, @attempts)
      File.mkdir_p!(dir)
      tmp = cached <> ".part#{System.unique_integer([:positive])}"
      File.write!(tmp, body)
      got = sha256_file(tmp)

      if got != expected do
        File.rm(tmp)

        Mix.raise("""
        micelio_storage: the downloaded #{name} does not match its checksum, so it was not installed.
          expected (#{@checksum_file}): #{expected}
          got:                          #{got}
          from: #{url}
        The file was damaged or replaced on its way. Check MICELIO_STORAGE_BASE_URL
        (a mirror may hold another build), or build from source with MICELIO_STORAGE_BUILD=1.
        """)
      end

      File.rename!(tmp, cached)
      cached
    end
  end

  # Unpacks the one library of `tarball` and installs it at `dest` through a
  # temp file and a rename (a running VM may have the old one mapped).
  defp unpack(tarball, library, dest) do
    {:ok, files} = extract(tarball)

    case List.keyfind(files, String.to_charlist(library), 0) do
      {_, bytes} ->
        File.mkdir_p!(Path.dirname(dest))
        tmp = dest <> ".tmp#{System.unique_integer([:positive])}"
        File.write!(tmp, bytes)
        File.rename!(tmp, dest)

      nil ->
        Mix.raise("micelio_storage: #{Path.basename(tarball)} does not hold #{library}")
    end
  end

  defp extract(tarball) do
    case :erl_tar.extract(String.to_charlist(tarball), [:memory, :compressed]) do
      {:ok, files} ->
        {:ok, files}

      {:error, reason} ->
        Mix.raise("micelio_storage: cannot unpack #{tarball}: #{inspect(reason)}")
    end
  end

  ## HTTP: proxies from HTTP_PROXY/HTTPS_PROXY (NO_PROXY), extra roots from
  ## MICELIO_STORAGE_CACERTFILE, retries with a pause that doubles.

  @doc false
  def download(url, attempts) do
    {:ok, _} = Application.ensure_all_started(:inets)
    {:ok, _} = Application.ensure_all_started(:ssl)
    profile = :micelio_storage_precompiled

    case :inets.start(:httpc, profile: profile) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end

    :ok = :httpc.set_options(proxy_options(), profile)
    attempt(url, profile, 1, attempts, nil)
  end

  defp attempt(url, _profile, n, attempts, last) when n > attempts do
    Mix.raise("""
    micelio_storage: could not download the precompiled NIF after #{attempts} attempts.
      url: #{url}
      last error: #{last}
    Either make the artifact reachable (set MICELIO_STORAGE_BASE_URL to a mirror, put the
    file in the cache #{cache_dir()} (MICELIO_STORAGE_CACHE_DIR), or set HTTPS_PROXY), or
    build from source with MICELIO_STORAGE_BUILD=1 (needs Rust: https://rustup.rs).
    """)
  end

  defp attempt(url, profile, n, attempts, _last) do
    request = {String.to_charlist(url), [{~c"user-agent", ~c"micelio_storage"}]}
    http = [timeout: 60_000, connect_timeout: 10_000, ssl: ssl_options(url)]

    case :httpc.request(:get, request, http, [body_format: :binary], profile) do
      {:ok, {{_, 200, _}, _headers, body}} ->
        body

      {:ok, {{_, status, _}, _headers, _body}} when status in 400..499 and status != 429 ->
        # Asking again will not make a missing file appear.
        attempt(url, profile, attempts + 1, attempts, "HTTP #{status}")

      other ->
        why =
          case other do
            {:ok, {{_, status, _}, _, _}} -> "HTTP #{status}"
            {:error, reason} -> inspect(reason)
          end

        if n < attempts do
          Mix.shell().info("==> micelio_storage: attempt #{n} failed (#{why}); retrying")
          Process.sleep(500 * Integer.pow(2, n - 1))
        end

        attempt(url, profile, n + 1, attempts, why)
    end
  end

  defp ssl_options("https" <> _) do
    host_check = [
      customize_hostname_check: [match_fun: :public_key.pkix_verify_hostname_match_fun(:https)]
    ]

    roots =
      case System.get_env("MICELIO_STORAGE_CACERTFILE") do
        path when path not in [nil, ""] -> [cacertfile: String.to_charlist(path)]
        _ -> [cacerts: :public_key.cacerts_get()]
      end

    [verify: :verify_peer, depth: 4] ++ roots ++ host_check
  end

  defp ssl_options(_http), do: []

  defp proxy_options do
    no_proxy =
      (System.get_env("NO_PROXY") || System.get_env("no_proxy") || "")
      |> String.split(",", trim: true)
      |> Enum.map(&String.to_charlist(String.trim(&1)))

    for {key, vars} <- [
          proxy: ["HTTP_PROXY", "http_proxy"],
          https_proxy: ["HTTPS_PROXY", "https_proxy"]
        ],
        url = Enum.find_value(vars, &System.get_env/1),
        url not in [nil, ""],
        %URI{host: host, port: port} = URI.parse(url),
        is_binary(host) do
      {key, {{String.to_charlist(host), port}, no_proxy}}
    end
  end
end
