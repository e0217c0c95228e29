defmodule Micelio.Storage.ErrorsWithContextTest do
  # Errors say what to fix: which store, which setting, where it was looked
  # for, which file, which key rule.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{HostileServer, Tmp}

  defmodule Artifacts do
    use Micelio.Storage, otp_app: :micelio_errors_context_test
  end

  describe "a named store that cannot boot" do
    test "without credentials names the store and where credentials were looked for" do
      Application.put_env(:micelio_errors_context_test, Artifacts,
        backend: :s3,
        s3_bucket: "b",
        s3_region: "us-east-1",
        s3_endpoint: "http://127.0.0.1:1",
        s3_access_key_id: nil,
        s3_secret_access_key: nil,
        s3_shared_credentials_file: Path.join(Tmp.dir!("no-creds"), "none"),
        s3_config_file: Path.join(Tmp.dir!("no-config"), "none")
      )

      assert {:error, {{:invalid_config, :s3_credentials, message}, _}} =
               start_supervised({Artifacts, []})

      assert message =~ "Micelio.Storage.ErrorsWithContextTest.Artifacts"
      assert message =~ "config :micelio_errors_context_test"
      assert message =~ "AWS_ACCESS_KEY_ID"
    end

    test "with a root that cannot be created names the store and the path" do
      blocker = Path.join(Tmp.dir!("root-blocker"), "a-file")
      File.write!(blocker, "not a directory")
      root = Path.join(blocker, "root")
      Application.put_env(:micelio_errors_context_test, Artifacts, local_path: root)

      assert {:error, {{:invalid_config, :local_path, message}, _}} =
               start_supervised({Artifacts, []})

      assert message =~ "Micelio.Storage.ErrorsWithContextTest.Artifacts"
      assert message =~ root
    end
  end

  test "put_file! with a missing source names the source file, not the store" do
    o = [local_path: Tmp.dir!("missing-source")]
    source = Path.join(Tmp.dir!("sources"), "not-there.txt")

    error = assert_raise Micelio.Storage.Error, fn -> Storage.put_file!("k", source, o) end
    assert error.reason == {:io, :enoent}
    assert Exception.message(error) =~ "cannot read the source file #{source}"

    dest = Path.join([Tmp.dir!("dest"), "no", "such", "dir", "f"])
    Storage.put!("k", "v", o)
    error = assert_raise Micelio.Storage.Error, fn -> Storage.get_file!("k", dest, o) end
    assert Exception.message(error) =~ "cannot write the destination file #{dest}"
  end

  test "a misspelled setting suggests the closest known one" do
    assert {:error, {:invalid_config, :s3_buckt, message}} =
             Storage.get("k", backend: :s3, s3_buckt: "x")

    assert message =~ "did you mean :s3_bucket?"

    assert {:error, {:invalid_config, :zzz_nothing_like_it, message}} =
             Storage.get("k", zzz_nothing_like_it: 1)

    refute message =~ "did you mean"
  end

  test "config :micelio_storage for a store module warns at boot" do
    ebin = :code.lib_dir(:micelio_storage, :ebin)

    script = """
    Application.put_env(:micelio_storage, Forge.Sessions, backend: :local)
    {:ok, _} = Application.ensure_all_started(:micelio_storage)
    Logger.flush()
    """

    {out, 0} =
      System.cmd(System.find_executable("elixir"), ["-pa", to_string(ebin), "-e", script],
        stderr_to_stdout: true
      )

    assert out =~ "config :micelio_storage, Forge.Sessions is not read"
  end

  describe "keys" do
    setup do
      {:ok, o: [local_path: Tmp.dir!("key-rules")]}
    end

    for {key, rule} <- [
          {"a//b", "no empty segment"},
          {"/abs", "no empty segment"},
          {"a/../b", "no . or .. segment"},
          {"a/" <> String.duplicate("s", 256), "at most 255 bytes"},
          {"a/.micelio-tmp-x", ".micelio-tmp-"},
          {"a\\b", "backslash"},
          {"", "not be empty"},
          {String.duplicate("k/", 520), "at most 1024 bytes"}
        ] do
      test "the message names the rule #{inspect(rule)} for #{inspect(String.slice(key, 0, 12))}",
           %{o: o} do
        key = unquote(key)
        assert {:error, {:invalid_key, ^key}} = Storage.get(key, o)
        error = assert_raise Micelio.Storage.Error, fn -> Storage.get!(key, o) end
        assert Exception.message(error) =~ unquote(rule)
      end
    end

    test "on S3 the s3_prefix counts against 1024 bytes, before any request" do
      server = HostileServer.start!(fn _ -> {:reply, 200, [], ""} end)

      o = [
        backend: :s3,
        s3_bucket: "b",
        s3_region: "us-east-1",
        s3_endpoint: HostileServer.endpoint(server),
        s3_access_key_id: "id",
        s3_secret_access_key: "secret",
        s3_prefix: String.duplicate("p", 100) <> "/"
      ]

      key = Enum.map_join(1..100, "/", fn _ -> "kkkkkkkkk" end)
      assert {:error, {:invalid_key, ^key}} = Storage.put(key, "v", o)
      assert {:error, {:invalid_key, ^key}} = Storage.get(key, o)

      path = Path.join(Tmp.dir!("prefix-limit"), "f")
      File.write!(path, "x")
      assert {:error, {:invalid_key, ^key}} = Storage.put_file(key, path, o)
      error = assert_raise Micelio.Storage.Error, fn -> Storage.get!(key, o) end
      assert Exception.message(error) =~ "s3_prefix"
      assert HostileServer.requests(server) == []
    end
  end
end
