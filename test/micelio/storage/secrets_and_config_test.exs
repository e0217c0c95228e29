defmodule Micelio.Storage.SecretsAndConfigTest do
  # Secrets never show, whatever the shape of the input; configuration traps
  # give errors instead of silent defaults. Touches the application env:
  # not async.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Micelio.Storage
  alias Micelio.Storage.Test.Tmp

  @secret "SECRET-7f3a9c-DO-NOT-LEAK"

  setup do
    saved = for app <- [:micelio, :micelio_storage], do: {app, Application.get_env(app, Storage)}
    for app <- [:micelio, :micelio_storage], do: Application.delete_env(app, Storage)

    on_exit(fn ->
      for {app, value} <- saved do
        if value,
          do: Application.put_env(app, Storage, value),
          else: Application.delete_env(app, Storage)
      end
    end)
  end

  # Every wrong shape of options we can think of, each carrying the secret.
  defp bad_shapes do
    [
      %{backend: :s3, s3_secret_access_key: @secret},
      [{:s3_secret_access_key, @secret, :extra}],
      [{"s3_secret_access_key", @secret}],
      [:backend, {:s3_secret_access_key, @secret}],
      {:s3_secret_access_key, @secret},
      [backend: :s3, s3_bucket: 42, s3_secret_access_key: @secret],
      [backend: :s3, s3_secret_access_key: {:wrapped, @secret}],
      [backend: :s3, s3_secret_access_key: @secret, s3_session_token: [@secret]],
      [
        backend: :s3,
        s3_bucket: "b",
        s3_access_key_id: "AKID",
        s3_secret_access_key: @secret,
        s3_endpoint: "http://127.0.0.1:1",
        s3_max_retries: 0
      ],
      @secret
    ]
  end

  defp calls(o) do
    [
      fn -> Storage.put("k", "v", o) end,
      fn -> Storage.put!("k", "v", o) end,
      fn -> Storage.put_if_none_match("k", "v", o) end,
      fn -> Storage.put_if_match("k", "v", "etag", o) end,
      fn -> Storage.get("k", o) end,
      fn -> Storage.get!("k", o) end,
      fn -> Storage.get_with_metadata("k", o) end,
      fn -> Storage.head("k", o) end,
      fn -> Storage.head!("k", o) end,
      fn -> Storage.exists?("k", o) end,
      fn -> Storage.list("", o) end,
      fn -> Storage.list!("", o) end,
      fn -> Storage.delete("k", o) end,
      fn -> Storage.delete!("k", o) end,
      fn -> Storage.copy("k", "k2", o) end,
      fn -> Storage.copy!("k", "k2", o) end,
      fn -> Storage.delete_many(["k"], o) end,
      fn -> Storage.delete_many!(["k"], o) end,
      fn -> Storage.presigned_url("k", o) end,
      fn -> Storage.open(o) end,
      fn -> Storage.stats(o) end,
      fn -> Micelio.Storage.S3.sign_headers(:get, "http://127.0.0.1:1/b/k", [], o) end,
      fn -> Micelio.Storage.S3.sign_headers(:get, @secret, [], o) end
    ]
  end

  # What a caller, a log or a crash report could see of one call.
  defp everything_shown(fun) do
    try do
      inspect(fun.(), limit: :infinity, printable_limit: :infinity)
    rescue
      e -> Exception.format(:error, e, __STACKTRACE__) <> inspect(e, limit: :infinity)
    catch
      kind, value -> Exception.format(kind, value, __STACKTRACE__)
    end
  end

  describe "secrets" do
    test "appear in no error term, raised message, stack trace or log, whatever the input" do
      log =
        capture_log(fn ->
          for o <- bad_shapes(), fun <- calls(o) do
            shown = everything_shown(fun)
            refute shown =~ @secret, "leaked by #{inspect(fun)}:\n#{shown}"
          end
        end)

      refute log =~ @secret
    end

    test "appear in no crash report of a process that dies on bad options" do
      log =
        capture_log(fn ->
          for o <- bad_shapes() do
            {pid, ref} = spawn_monitor(fn -> Storage.get!("k", o) end)
            assert_receive {:DOWN, ^ref, :process, ^pid, reason}
            refute inspect(reason, limit: :infinity) =~ @secret
          end

          Process.sleep(50)
        end)

      refute log =~ @secret
    end

    test "app config given as a map or with odd entries shows no secret" do
      for shape <- [%{s3_secret_access_key: @secret}, [{:s3_secret_access_key, @secret, 1}]] do
        Application.put_env(:micelio, Storage, shape)
        assert {:error, {:invalid_config, :options, message}} = Storage.get("k")
        refute message =~ @secret
        assert message =~ "config :micelio, Micelio.Storage"
      end
    end

    test "a handle and a resolved config inspect without the secret" do
      root = Tmp.dir!("secret-handle")
      {:ok, config} = Micelio.Storage.Config.resolve(s3_secret_access_key: @secret)
      refute inspect(config) =~ @secret
      {:ok, h} = Storage.open(local_path: root)
      refute inspect(h, structs: false, limit: :infinity) =~ @secret
    end
  end

  describe "the application config" do
    test "config :micelio_storage, Micelio.Storage works like config :micelio" do
      root = Tmp.dir!("app-micelio-storage")
      Application.put_env(:micelio_storage, Storage, local_path: root)
      assert {:ok, "k"} = Storage.put("k", "from micelio_storage config")
      assert File.read!(Path.join(root, "k")) == "from micelio_storage config"
    end

    test "both set is an error that names both" do
      Application.put_env(:micelio, Storage, local_path: Tmp.dir!("a"))
      Application.put_env(:micelio_storage, Storage, local_path: Tmp.dir!("b"))
      assert {:error, {:invalid_config, :app_config, message}} = Storage.get("k")
      assert message =~ "config :micelio, Micelio.Storage"
      assert message =~ "config :micelio_storage, Micelio.Storage"
      assert_raise Storage.Error, ~r/both/, fn -> Storage.put!("k", "v") end
    end

    test "config under another app is not ignored silently" do
      Application.put_env(:logger, Storage, local_path: "/srv/never-read")

      try do
        log = capture_log(fn -> assert {:ok, _} = Storage.list("", local_path: Tmp.dir!("w")) end)
        assert log =~ "config :logger, Micelio.Storage is ignored"
      after
        Application.delete_env(:logger, Storage)
      end
    end

    test "nil means unset for every setting, as System.get_env/1 gives it" do
      root = Tmp.dir!("nil-app")

      Application.put_env(:micelio, Storage,
        local_path: root,
        s3_bucket: nil,
        timeout: nil,
        cache_disk_path: nil
      )

      assert {:ok, config} = Micelio.Storage.Config.resolve(local_path: nil, backend: nil)
      assert config.local_path == root
      assert config.backend == :local
      assert config.timeout == 30_000
      assert {:ok, "k"} = Storage.put("k", "v", local_path: nil, s3_bucket: nil)
      assert File.read!(Path.join(root, "k")) == "v"

      assert {:ok, %{origin_backend: :local, cache_disk_path: path}} =
               Micelio.Storage.Config.resolve(backend: :tiered, s3_bucket: nil)

      assert is_binary(path)
    end
  end

  describe "per-object limits of the cache tiers" do
    test "objects over cache_memory_max_object_bytes are served but not kept in RAM" do
      dir = Tmp.dir!("max-object-ram")

      o = [
        backend: :tiered,
        origin_backend: :local,
        local_path: Path.join(dir, "origin"),
        cache_disk_path: Path.join(dir, "cache"),
        cache_disk_max_bytes: 0,
        cache_memory_max_object_bytes: 10_000
      ]

      Storage.put!("small", :binary.copy("s", 9_000), o)
      Storage.put!("large", :binary.copy("l", 11_000), o)
      for _ <- 1..2, do: Storage.get!("small", o) && Storage.get!("large", o)
      {:ok, stats} = Storage.stats(o)
      assert stats.memory.entries == 1
      assert stats.origin.fetches == 3
      assert Storage.get!("large", o) == :binary.copy("l", 11_000)
    end

    test "objects over cache_disk_max_object_bytes pass the disk tier by" do
      dir = Tmp.dir!("max-object-disk")

      o = [
        backend: :tiered,
        origin_backend: :local,
        local_path: Path.join(dir, "origin"),
        cache_disk_path: Path.join(dir, "cache"),
        cache_memory_max_bytes: 0,
        cache_disk_max_object_bytes: 10_000
      ]

      Storage.put!("small", :binary.copy("s", 9_000), o)
      Storage.put!("large", :binary.copy("l", 11_000), o)
      for _ <- 1..2, do: Storage.get!("small", o) && Storage.get!("large", o)
      {:ok, stats} = Storage.stats(o)
      assert stats.disk.entries == 1
      assert stats.origin.fetches == 3
    end

    test "the limits are settings with environment variables and docs" do
      for {name, var} <- [
            cache_memory_max_object_bytes: "STORAGE_CACHE_MEMORY_MAX_OBJECT_BYTES",
            cache_disk_max_object_bytes: "STORAGE_CACHE_DISK_MAX_OBJECT_BYTES"
          ] do
        entry = Micelio.Storage.Settings.fetch(name)
        assert entry.env == [var]
        assert is_integer(entry.default) and entry.default > 0
        assert Micelio.Storage.Settings.markdown() =~ "`#{name}`"
      end
    end
  end
end
