defmodule Micelio.Storage.ConfigTest do
  # Touches the application env and OS environment: not async.
  use ExUnit.Case, async: false

  alias Micelio.Storage
  alias Micelio.Storage.Config
  alias Micelio.Storage.Test.Tmp

  @vars ~w(STORAGE_BACKEND STORAGE_LOCAL_PATH STORAGE_TIMEOUT_MS S3_BUCKET AWS_SECRET_ACCESS_KEY
           AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)

  setup do
    app = Application.get_env(:micelio, Micelio.Storage)
    env = Map.new(@vars, &{&1, System.get_env(&1)})
    Application.delete_env(:micelio, Micelio.Storage)
    Enum.each(@vars, &System.delete_env/1)

    on_exit(fn ->
      if app,
        do: Application.put_env(:micelio, Micelio.Storage, app),
        else: Application.delete_env(:micelio, Micelio.Storage)

      for {k, v} <- env, do: if(v, do: System.put_env(k, v), else: System.delete_env(k))
      Storage.reload()
    end)

    Storage.reload()
    :ok
  end

  test "defaults: local backend under <tmp>/micelio/storage outside prod" do
    assert {:ok, %{backend: :local, local_path: path, timeout: 30_000, durable: false}} =
             Config.resolve([])

    assert path == Path.join([System.tmp_dir!(), "micelio", "storage"])
  end

  test "precedence: call options > app config > env vars > defaults" do
    System.put_env("STORAGE_LOCAL_PATH", "/from/env")
    assert {:ok, %{local_path: "/from/env"}} = Config.resolve([])
    Application.put_env(:micelio, Micelio.Storage, local_path: "/from/app")
    assert {:ok, %{local_path: "/from/app"}} = Config.resolve([])
    assert {:ok, %{local_path: "/from/call"}} = Config.resolve(local_path: "/from/call")
  end

  test "STORAGE_BACKEND selects the backend, case-insensitively" do
    System.put_env("STORAGE_BACKEND", "LOCAL")
    assert {:ok, %{backend: :local}} = Config.resolve([])
    System.put_env("STORAGE_BACKEND", "s3")
    assert {:ok, %{backend: :s3}} = Config.resolve([])
  end

  test "bad values name the setting and where they came from" do
    System.put_env("STORAGE_BACKEND", "ftp")
    assert {:error, {:invalid_config, :backend, msg}} = Config.resolve([])
    assert msg =~ "STORAGE_BACKEND" and msg =~ "ftp"
    System.delete_env("STORAGE_BACKEND")

    System.put_env("STORAGE_LOCAL_PATH", "relative/dir")
    assert {:error, {:invalid_config, :local_path, msg}} = Config.resolve([])
    assert msg =~ "absolute" and msg =~ "STORAGE_LOCAL_PATH"

    Application.put_env(:micelio, Micelio.Storage, timeout: -5)
    assert {:error, {:invalid_config, :timeout, msg}} = Config.resolve([])
    assert msg =~ "config :micelio"

    assert {:error, {:invalid_config, :bogus, _}} = Config.resolve(bogus: 1)
    assert {:error, {:invalid_config, :options, _}} = Config.resolve(:not_a_list)
  end

  test "API calls return the config error, bang calls raise it" do
    assert {:error, {:invalid_config, :local_path, _}} = Storage.put("k", "v", local_path: "rel")

    assert_raise Storage.Error, ~r/invalid local_path/, fn ->
      Storage.get!("k", local_path: "rel")
    end
  end

  test "an app config change takes effect on the next call" do
    a = Tmp.dir!("cfg-a")
    b = Tmp.dir!("cfg-b")
    Application.put_env(:micelio, Micelio.Storage, local_path: a)
    Storage.put!("k", "in a")
    Application.put_env(:micelio, Micelio.Storage, local_path: b)
    assert {:error, :not_found} = Storage.get("k")
    Storage.put!("k", "in b")
    assert File.read!(Path.join(a, "k")) == "in a"
    assert File.read!(Path.join(b, "k")) == "in b"
  end

  test "the tiered backend resolves its cache settings and its origin's" do
    assert {:ok, config} = Config.resolve(backend: :tiered, origin_backend: :local)

    assert %{cache_memory_max_bytes: 64_000_000, cdn_timeout_ms: 2_000, cdn_base_url: nil} =
             config

    assert is_binary(config.local_path) and is_binary(config.cache_disk_path)
    refute Map.has_key?(config, :s3_bucket)

    assert {:ok, %{origin_backend: :s3, s3_bucket: "b"}} =
             Config.resolve(backend: :tiered, s3_bucket: "b")

    System.put_env("STORAGE_CACHE_MEMORY_MAX_BYTES", "0")
    assert {:ok, %{cache_memory_max_bytes: 0}} = Config.resolve(backend: :tiered)
    System.delete_env("STORAGE_CACHE_MEMORY_MAX_BYTES")

    assert {:error, :missing_s3_credentials} =
             Storage.get("k", backend: :tiered, s3_bucket: "b", s3_access_key_id: nil)
  end

  test "STORAGE_TIMEOUT_MS is parsed as an integer" do
    System.put_env("STORAGE_TIMEOUT_MS", "1_500")
    assert {:ok, %{timeout: 1500}} = Config.resolve([])
    System.put_env("STORAGE_TIMEOUT_MS", "soon")
    assert {:error, {:invalid_config, :timeout, _}} = Config.resolve([])
  end

  test "container credential URIs: ECS paths, https, and http only to trusted hosts" do
    System.put_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc")

    assert {:ok, %{s3_container_credentials_uri: "http://169.254.170.2/v2/credentials/abc"}} =
             Config.resolve(backend: :s3)

    # The full URI wins over the relative one, as in the AWS SDKs.
    System.put_env("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials")

    assert {:ok, %{s3_container_credentials_uri: "http://169.254.170.23/v1/credentials"}} =
             Config.resolve(backend: :s3)

    for ok <- ["https://creds.example.com/x", "http://127.0.0.1:8080/c", "http://localhost/c"] do
      assert {:ok, %{s3_container_credentials_uri: ^ok}} =
               Config.resolve(backend: :s3, s3_container_credentials_uri: ok)
    end

    # The authorization token would be sent in the clear to another host.
    System.put_env("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.5/creds")

    assert {:error, {:invalid_config, :s3_container_credentials_uri, message}} =
             Config.resolve(backend: :s3)

    assert message =~ "AWS_CONTAINER_CREDENTIALS_FULL_URI"
  end

  describe "remembered resolutions" do
    test "an environment change takes effect on the next call after reload/0" do
      a = Tmp.dir!("env-a")
      b = Tmp.dir!("env-b")
      System.put_env("STORAGE_LOCAL_PATH", a)
      Storage.reload()
      Storage.put!("k", "in a")
      assert Storage.get("k") == {:ok, "in a"}
      System.put_env("STORAGE_LOCAL_PATH", b)
      Storage.reload()
      assert {:error, :not_found} = Storage.get("k")
      Storage.put!("k", "in b")
      System.put_env("STORAGE_LOCAL_PATH", a)
      Storage.reload()
      assert Storage.get("k") == {:ok, "in a"}
      assert File.read!(Path.join(b, "k")) == "in b"
    end

    test "without reload/0, an environment change takes effect within the check interval" do
      a = Tmp.dir!("env-ia")
      b = Tmp.dir!("env-ib")
      System.put_env("STORAGE_LOCAL_PATH", a)
      Storage.reload()
      Storage.put!("k", "in a")
      System.put_env("STORAGE_LOCAL_PATH", b)
      Process.sleep(Micelio.Storage.Resolved.env_check_ms() + 50)
      assert {:error, :not_found} = Storage.get("k")
      assert {:error, :not_found} = Storage.get("k", timeout: 5_000)
    end

    test "application config changes take effect on the very next call" do
      a = Tmp.dir!("app-a")
      b = Tmp.dir!("app-b")
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: a)
      Storage.put!("k", "in a")
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: b)
      assert {:error, :not_found} = Storage.get("k")
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: a)
      assert {:ok, "in a"} = Storage.get("k")
    after
      Application.delete_env(:micelio_storage, Micelio.Storage)
    end

    test "the application controller working on something else changes nothing, and a change after it is seen" do
      a = Tmp.dir!("ctl-a")
      b = Tmp.dir!("ctl-b")
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: a)
      Storage.put!("k", "in a")
      assert {:ok, "in a"} = Storage.get("k")
      # Another app's config: the controller's count moves, ours does not change.
      Application.put_env(:micelio_config_test_other, :anything, System.unique_integer())
      assert {:ok, "in a"} = Storage.get("k")
      assert {:ok, "in a"} = Storage.get("k", timeout: 5_000)
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: b)
      assert {:error, :not_found} = Storage.get("k")
      assert {:error, :not_found} = Storage.get("k", timeout: 5_000)
    after
      Application.delete_env(:micelio_storage, Micelio.Storage)
      Application.delete_env(:micelio_config_test_other, :anything)
    end

    test "a change made by another process is seen on this process's next call" do
      # Each process remembers the controller count it saw the config
      # validated at; a change elsewhere moves the count it compares.
      a = Tmp.dir!("other-a")
      b = Tmp.dir!("other-b")
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: a)
      Storage.put!("k", "in a")
      assert {:ok, "in a"} = Storage.get("k")
      assert {:ok, "in a"} = Storage.get("k", timeout: 5_000)
      # Until this process has remembered a validated count (the first
      # calls may find the count moved by the resolver's own work).
      assert Enum.any?(1..100, fn _ ->
               {:ok, "in a"} = Storage.get("k")
               Process.get(:micelio_storage_resolved_seen) != nil
             end)

      Task.async(fn -> Application.put_env(:micelio_storage, Micelio.Storage, local_path: b) end)
      |> Task.await()

      assert {:error, :not_found} = Storage.get("k")
      assert {:error, :not_found} = Storage.get("k", timeout: 5_000)

      Task.async(fn -> Application.put_env(:micelio_storage, Micelio.Storage, local_path: a) end)
      |> Task.await()

      assert {:ok, "in a"} = Storage.get("k")
      assert {:ok, "in a"} = Storage.get("k", timeout: 5_000)
    after
      Application.delete_env(:micelio_storage, Micelio.Storage)
    end

    test "calls with options see an app config change on the very next call too" do
      a = Tmp.dir!("opts-a")
      b = Tmp.dir!("opts-b")
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: a)
      Storage.put!("k", "in a", timeout: 5_000)
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: b)
      assert {:error, :not_found} = Storage.get("k", timeout: 5_000)
      Storage.put!("k", "in b", timeout: 5_000)
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: a)
      assert {:ok, "in a"} = Storage.get("k", timeout: 5_000)
      # The same options under a config seen before resolve to its store again.
      Application.put_env(:micelio_storage, Micelio.Storage, local_path: b)
      assert {:ok, "in b"} = Storage.get("k", timeout: 5_000)
    after
      Application.delete_env(:micelio_storage, Micelio.Storage)
    end

    test "a variable that becomes invalid is reported, not served from memory" do
      Storage.put!("k", "v", local_path: Tmp.dir!("env-bad"))
      System.put_env("STORAGE_TIMEOUT_MS", "soon")
      Storage.reload()
      assert {:error, {:invalid_config, :timeout, _}} = Storage.get("k")
    end

    test "the remembered entries hold no secret, and neither do handles" do
      secret = "remembered-secret-#{System.unique_integer([:positive])}"
      System.put_env("AWS_SECRET_ACCESS_KEY", secret)

      opts = [
        backend: :s3,
        s3_bucket: "b",
        s3_endpoint: "http://127.0.0.1:9",
        s3_access_key_id: "AKID"
      ]

      assert {:ok, handle} = Storage.open(opts)
      assert {:ok, _} = Storage.open(Keyword.put(opts, :s3_secret_access_key, secret <> "2"))
      dump = :erlang.term_to_binary(:ets.tab2list(Micelio.Storage.Resolved))
      assert :binary.match(dump, secret) == :nomatch
      assert :binary.match(:erlang.term_to_binary(handle), secret) == :nomatch

      # A rotated secret in the environment gets its own store.
      System.put_env("AWS_SECRET_ACCESS_KEY", secret <> "3")
      Storage.reload()
      assert {:ok, rotated} = Storage.open(opts)
      refute rotated.store == handle.store
    end

    test "distinct options are remembered up to a bound" do
      root = Tmp.dir!("env-many")

      for i <- 1..1_100 do
        assert {:ok, _} = Storage.open(local_path: Path.join(root, "#{i}"))
      end

      assert :ets.info(Micelio.Storage.Resolved, :size) in 1..1_024
    end
  end
end
