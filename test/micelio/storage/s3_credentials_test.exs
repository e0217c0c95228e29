defmodule Micelio.Storage.S3CredentialsTest do
  # Temporary credentials from the container endpoint and from IMDSv2,
  # served by a real :inets httpd and used against the real SeaweedFS, which
  # verifies every signature made with them.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{CredentialsServer, Seaweed, Tmp}

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  setup do
    # The server hands out SeaweedFS's identity (SeaweedFS refuses session
    # tokens it did not issue, so these documents carry none).
    server =
      CredentialsServer.start!(
        access_key_id: Seaweed.access_key(),
        secret_access_key: Seaweed.secret_key(),
        authorization: "container-auth-token-1"
      )

    on_exit(fn -> CredentialsServer.stop(server) end)

    opts =
      Seaweed.opts(s3_access_key_id: nil, s3_secret_access_key: nil)
      |> Keyword.merge(
        s3_credentials: :container,
        s3_container_credentials_uri: server.url <> "/creds",
        s3_container_authorization_token: "container-auth-token-1"
      )

    {:ok, server: server, opts: opts}
  end

  describe "container credentials (ECS task role, EKS Pod Identity)" do
    test "are fetched once and used for every operation", %{server: server, opts: o} do
      assert {:ok, _} = Storage.put("a/1.txt", "one", o)
      assert {:ok, "one"} = Storage.get("a/1.txt", o)
      assert {:ok, ["a/1.txt"]} = Storage.list("a/", o)
      assert {:ok, "a/1.txt"} = Storage.delete("a/1.txt", o)
      assert {:error, :not_found} = Storage.get("a/1.txt", o)
      assert CredentialsServer.served(server) == 1
    end

    test "are chosen without s3_credentials when only the URI is set", %{opts: o} do
      o = Keyword.delete(o, :s3_credentials)
      assert {:ok, _} = Storage.put("auto.txt", "x", o)
      assert {:ok, "x"} = Storage.get("auto.txt", o)
    end

    test "a wrong authorization token is a credentials error naming the step, not the token",
         %{opts: o} do
      o = Keyword.put(o, :s3_container_authorization_token, "wrong-token-value")
      assert {:error, {:credentials, message}} = Storage.get("k", o)
      assert message =~ "container credentials endpoint: HTTP 401"
      refute message =~ "wrong-token-value"
      assert_raise Storage.Error, ~r/credentials/, fn -> Storage.get!("k", o) end
    end

    test "the token file is read again on every refresh", %{server: server, opts: o} do
      file = Path.join(Tmp.dir!("token-file"), "token")
      File.write!(file, "file-token-1\n")

      # Five seconds left: every call fetches again, and a failed fetch
      # cannot fall back on them (that needs ten seconds left).
      CredentialsServer.set!(server,
        access_key_id: Seaweed.access_key(),
        secret_access_key: Seaweed.secret_key(),
        authorization: "file-token-1",
        expires_in: 5
      )

      o =
        o
        |> Keyword.delete(:s3_container_authorization_token)
        |> Keyword.put(:s3_container_authorization_token_file, file)

      assert {:ok, _} = Storage.put("f.txt", "v", o)

      CredentialsServer.set!(server,
        access_key_id: Seaweed.access_key(),
        secret_access_key: Seaweed.secret_key(),
        authorization: "file-token-2",
        expires_in: 5
      )

      assert {:error, {:credentials, _}} = Storage.get("f.txt", o)
      File.write!(file, "file-token-2")
      assert {:ok, "v"} = Storage.get("f.txt", o)
    end

    test "credentials near expiry are replaced without reopening the store",
         %{server: server, opts: o} do
      CredentialsServer.set!(server,
        access_key_id: Seaweed.access_key(),
        secret_access_key: "rotated-out-secret",
        authorization: "container-auth-token-1",
        expires_in: 240
      )

      assert {:error, {:forbidden, "SignatureDoesNotMatch"}} = Storage.put("r.txt", "v", o)
      before = CredentialsServer.served(server)

      CredentialsServer.set!(server,
        access_key_id: Seaweed.access_key(),
        secret_access_key: Seaweed.secret_key(),
        authorization: "container-auth-token-1",
        expires_in: 3600
      )

      assert {:ok, _} = Storage.put("r.txt", "v", o)
      assert {:ok, "v"} = Storage.get("r.txt", o)
      # The fresh credentials last an hour: fetched once more, then reused.
      assert CredentialsServer.served(server) == before + 1
    end

    test "valid credentials keep working while the endpoint is down",
         %{server: server, opts: o} do
      CredentialsServer.set!(server,
        access_key_id: Seaweed.access_key(),
        secret_access_key: Seaweed.secret_key(),
        authorization: "container-auth-token-1",
        expires_in: 240
      )

      assert {:ok, _} = Storage.put("d.txt", "v", o)
      CredentialsServer.stop(server)
      assert {:ok, "v"} = Storage.get("d.txt", o)
    end

    test "an unreachable endpoint is a credentials error, not a hang", %{opts: o} do
      o =
        Keyword.merge(o,
          s3_container_credentials_uri: "http://127.0.0.1:1/creds",
          s3_max_retries: 0,
          timeout: 10_000
        )

      assert {:error, {:credentials, message}} = Storage.get("k", o)
      assert message =~ "container credentials endpoint"
    end

    test "presigned URLs are signed with them and work for another client",
         %{opts: o} do
      {:ok, _} = Storage.put("p.txt", "presigned", o)
      assert {:ok, url} = Storage.presigned_url("p.txt", o)
      {:ok, _} = Application.ensure_all_started(:inets)

      assert {:ok, {{_, 200, _}, _, ~c"presigned"}} =
               :httpc.request(:get, {to_charlist(url), []}, [], [])
    end

    test "the token never shows in inspected config, handles or the store cache", %{opts: o} do
      token = "container-secret-token-#{System.unique_integer([:positive])}"
      o = Keyword.put(o, :s3_container_authorization_token, token)
      {:ok, config} = Storage.Config.resolve(o)
      refute inspect(config) =~ token
      {:ok, handle} = Storage.open(o)
      refute inspect(handle, structs: false) =~ token
      dump = :erlang.term_to_binary(:ets.tab2list(Micelio.Storage.Stores))
      assert :binary.match(dump, token) == :nomatch
    end
  end

  describe "instance credentials (EC2 IMDSv2)" do
    test "go through the session token, the role list and the role's document",
         %{server: server, opts: o} do
      o =
        o
        |> Keyword.drop([:s3_container_credentials_uri, :s3_container_authorization_token])
        |> Keyword.merge(s3_credentials: :instance, s3_metadata_endpoint: server.url)

      assert {:ok, _} = Storage.put("i.txt", "from the instance role", o)
      assert {:ok, "from the instance role"} = Storage.get("i.txt", o)
      assert CredentialsServer.served(server) == 1
    end

    test "are never probed unless asked for" do
      o = [
        backend: :s3,
        s3_bucket: "b",
        s3_endpoint: "http://127.0.0.1:1",
        s3_access_key_id: nil,
        s3_secret_access_key: nil,
        s3_session_token: nil,
        s3_container_credentials_uri: nil
      ]

      assert {:error, :missing_s3_credentials} = Storage.get("k", o)
    end
  end
end
