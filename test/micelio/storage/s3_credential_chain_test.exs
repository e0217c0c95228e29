defmodule Micelio.Storage.S3CredentialChainTest do
  # The rest of the AWS credential chain: web identity (EKS IRSA) through a
  # real :inets httpd playing STS, and the shared credentials and config
  # files, each used against the real SeaweedFS, which verifies signatures.
  # Not async: some cases set environment variables.
  use ExUnit.Case, async: false

  alias Micelio.Storage
  alias Micelio.Storage.Test.{CredentialsServer, Seaweed, Tmp}

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  defp base_opts,
    do: Seaweed.opts(s3_access_key_id: nil, s3_secret_access_key: nil, s3_session_token: nil)

  describe "web identity (AssumeRoleWithWebIdentity)" do
    setup do
      server =
        CredentialsServer.start!(
          access_key_id: Seaweed.access_key(),
          secret_access_key: Seaweed.secret_key(),
          web_identity_token: "oidc-token-1",
          role_arn: "arn:aws:iam::123456789012:role/micelio"
        )

      on_exit(fn -> CredentialsServer.stop(server) end)
      file = Path.join(Tmp.dir!("web-identity"), "token")
      File.write!(file, "oidc-token-1\n")

      opts =
        base_opts() ++
          [
            s3_web_identity_token_file: file,
            s3_role_arn: "arn:aws:iam::123456789012:role/micelio",
            s3_role_session_name: "forge-web-1",
            s3_sts_endpoint: server.url <> "/sts"
          ]

      {:ok, server: server, token_file: file, opts: opts}
    end

    test "is chosen when the token file and role are set, and signs every call",
         %{server: server, opts: o} do
      assert {:ok, _} = Storage.put("wi/a.txt", "one", o)
      assert {:ok, "one"} = Storage.get("wi/a.txt", o)
      assert CredentialsServer.served(server) == 1

      assert %{"RoleSessionName" => "forge-web-1", "Version" => "2011-06-15"} =
               CredentialsServer.last_sts(server)
    end

    test "the token file is read again on every refresh", %{
      server: server,
      token_file: file,
      opts: o
    } do
      set = fn token ->
        CredentialsServer.set!(server,
          access_key_id: Seaweed.access_key(),
          secret_access_key: Seaweed.secret_key(),
          web_identity_token: token,
          role_arn: "arn:aws:iam::123456789012:role/micelio",
          # Inside the refresh window: every call asks STS again.
          expires_in: 5
        )
      end

      set.("oidc-token-1")
      assert {:ok, _} = Storage.put("wi/r.txt", "v", o)
      set.("oidc-token-2")
      assert {:error, {:credentials, _}} = Storage.get("wi/r.txt", o)
      File.write!(file, "oidc-token-2")
      assert {:ok, "v"} = Storage.get("wi/r.txt", o)
      assert CredentialsServer.last_sts(server)["WebIdentityToken"] == "oidc-token-2"
    end

    test "a refused token is a credentials error with STS's code, never the token",
         %{token_file: file, opts: o} do
      File.write!(file, "a-leaked-looking-token-value")
      assert {:error, {:credentials, message}} = Storage.get("k", o)
      assert message =~ "STS AssumeRoleWithWebIdentity: HTTP 400 InvalidIdentityToken"
      refute message =~ "a-leaked-looking-token-value"
      error = assert_raise Storage.Error, fn -> Storage.get!("k", o) end
      refute Exception.message(error) =~ "a-leaked-looking-token-value"
    end

    test "a missing token file is a credentials error naming the file", %{opts: o} do
      o = Keyword.put(o, :s3_web_identity_token_file, "/nonexistent/micelio/token")
      assert {:error, {:credentials, message}} = Storage.get("k", o)
      assert message =~ "/nonexistent/micelio/token"
    end

    test "AWS_ENDPOINT_URL_STS sets the STS endpoint", %{server: server} do
      opts = Keyword.drop(base_opts(), [:s3_sts_endpoint])
      file = Path.join(Tmp.dir!("web-identity-env"), "token")
      File.write!(file, "oidc-token-1")

      opts =
        opts ++
          [
            s3_web_identity_token_file: file,
            s3_role_arn: "arn:aws:iam::123456789012:role/micelio"
          ]

      with_env([{"AWS_ENDPOINT_URL_STS", server.url <> "/sts"}], fn ->
        assert {:ok, _} = Storage.put("wi/env.txt", "e", opts)
      end)
    end
  end

  describe "shared credentials and config files" do
    setup do
      dir = Tmp.dir!("aws-files")
      creds = Path.join(dir, "credentials")
      config = Path.join(dir, "config")

      File.write!(creds, """
      # a comment
      [default]
      aws_access_key_id = wrong-default-key
      aws_secret_access_key = wrong-default-secret

      [forge]
      aws_access_key_id = #{Seaweed.access_key()}
      aws_secret_access_key = #{Seaweed.secret_key()}
      """)

      File.write!(config, """
      [default]
      region = us-east-1

      [profile forge]
      region = us-east-1 ; trailing comment

      [profile elsewhere]
      region = eu-central-1

      [profile chained]
      role_arn = arn:aws:iam::123456789012:role/x
      source_profile = forge
      """)

      opts = base_opts() ++ [s3_shared_credentials_file: creds, s3_config_file: config]
      {:ok, opts: opts, creds: creds, config: config}
    end

    test "a profile's keys sign requests", %{opts: o} do
      o = o ++ [s3_profile: "forge"]
      assert {:ok, _} = Storage.put("p/a.txt", "profile", o)
      assert {:ok, "profile"} = Storage.get("p/a.txt", o)
    end

    test "AWS_PROFILE picks the profile; keys in settings come first", %{opts: o} do
      with_env([{"AWS_PROFILE", "forge"}], fn ->
        assert {:ok, _} = Storage.put("p/env.txt", "x", o)
      end)

      # The default profile's keys are wrong: SeaweedFS refuses them.
      assert {:error, {:forbidden, _}} = Storage.put("p/d.txt", "x", o)

      explicit =
        Keyword.merge(o,
          s3_access_key_id: Seaweed.access_key(),
          s3_secret_access_key: Seaweed.secret_key()
        )

      assert {:ok, _} = Storage.put("p/d.txt", "x", explicit)
    end

    test "the region comes from the profile unless set", %{opts: o} do
      o = Keyword.delete(o, :s3_region)
      {:ok, config} = Micelio.Storage.Config.resolve(o ++ [s3_profile: "elsewhere"])
      assert config.s3_region == "eu-central-1"

      {:ok, config} =
        Micelio.Storage.Config.resolve(o ++ [s3_profile: "elsewhere", s3_region: "ap-south-1"])

      assert config.s3_region == "ap-south-1"
    end

    test "unsupported profiles and missing profiles are clear errors", %{opts: o} do
      assert {:error, {:invalid_config, :s3_profile, message}} =
               Storage.get("k", o ++ [s3_profile: "chained"])

      assert message =~ "source_profile"

      assert {:error, {:invalid_config, :s3_profile, message}} =
               Storage.get("k", o ++ [s3_profile: "nope"])

      assert message =~ ~s(no profile "nope")
    end

    test "a profile's secret never shows", %{opts: o} do
      {:ok, handle} = Storage.open(o ++ [s3_profile: "forge"])
      refute inspect(handle) =~ Seaweed.secret_key()
    end
  end

  defp with_env(vars, fun) do
    old = for {k, _} <- vars, do: {k, System.get_env(k)}
    for {k, v} <- vars, do: System.put_env(k, v)
    Storage.reload()

    try do
      fun.()
    after
      for {k, v} <- old, do: if(v, do: System.put_env(k, v), else: System.delete_env(k))
      Storage.reload()
    end
  end
end
