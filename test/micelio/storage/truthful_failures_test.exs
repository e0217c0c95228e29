defmodule Micelio.Storage.TruthfulFailuresTest do
  # Every failure is reported as what it is: no short list in place of an
  # error, no :not_found that isn't one, no redirect followed, and the
  # endpoint named in network errors. Servers are real: SeaweedFS, and
  # small :gen_tcp servers for answers SeaweedFS never gives.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{FaultProxy, FixedServer, Seaweed, Tmp}

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  # S3 options pointing at a loopback server that answers every request
  # with `status`, `headers` and `body`.
  defp opts_for(body, status \\ 200, headers \\ []) do
    {port, counter} = FixedServer.start!(status, headers, body)

    {Seaweed.opts(s3_endpoint: "http://127.0.0.1:#{port}", s3_max_retries: 0, timeout: 5_000),
     counter}
  end

  describe "downloads whose content does not match the server's checksum" do
    setup do
      # The server says the object is "hello" (its CRC-32) but sends "jello".
      crc = Base.encode64(<<:erlang.crc32("hello")::32>>)
      headers = [{"etag", ~s("0123")}, {"x-amz-checksum-crc32", crc}]
      {opts, _} = opts_for("jello", 200, headers)
      {:ok, opts: opts ++ [s3_pool_size: 0], crc: crc}
    end

    test "get/2 fails with :checksum_mismatch", %{opts: o, crc: crc} do
      assert {:error, {:checksum_mismatch, ^crc, got}} = Storage.get("k", o)
      assert got == Base.encode64(<<:erlang.crc32("jello")::32>>)
    end

    test "get_file/3 fails and leaves no file", %{opts: o} do
      dir = Tmp.dir!("mismatch")
      path = Path.join(dir, "out")
      assert {:error, {:checksum_mismatch, _, _}} = Storage.get_file("k", path, o)
      assert File.ls!(dir) == []
    end

    test "stream/2 raises", %{opts: o} do
      assert_raise Storage.Error, ~r/checksum mismatch/, fn ->
        Storage.stream("k", o) |> Enum.to_list()
      end
    end
  end

  describe "list answers that are not a whole ListBucketResult" do
    for {name, body} <- [
          html: "<html><body>502 Bad Gateway</body></html>",
          empty: "",
          error_document: "<Error><Code>InternalError</Code><Message>oops</Message></Error>",
          cut_off: "<ListBucketResult><Contents><Key>p/a</Key></Contents><Contents><Key>p/",
          truncated_without_token:
            "<ListBucketResult><Contents><Key>p/a</Key></Contents><IsTruncated>true</IsTruncated></ListBucketResult>"
        ] do
      test "#{name} is an error, never a short list" do
        {opts, _} = opts_for(unquote(body))
        assert {:error, {:s3_error, 200, "MalformedXML", message}} = Storage.list("p/", opts)
        assert is_binary(message) and message != ""
        assert_raise Storage.Error, ~r/MalformedXML/, fn -> Storage.list!("p/", opts) end
      end
    end

    test "a whole, empty ListBucketResult is an empty list" do
      {opts, _} =
        opts_for("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>")

      assert {:ok, []} = Storage.list("p/", opts)
    end
  end

  describe "a missing bucket" do
    setup do
      {:ok, opts: Seaweed.opts(s3_bucket: "no-such-bucket-#{System.unique_integer([:positive])}")}
    end

    # (SeaweedFS creates a bucket on a PUT into it, so puts are not checked.)
    test "is {:no_such_bucket, bucket} on every operation, never :not_found", %{opts: o} do
      bucket = o[:s3_bucket]
      assert {:error, {:no_such_bucket, ^bucket}} = Storage.get("k", o)
      assert {:error, {:no_such_bucket, ^bucket}} = Storage.head("k", o)
      assert {:error, {:no_such_bucket, ^bucket}} = Storage.list("", o)
      assert {:error, {:no_such_bucket, ^bucket}} = Storage.delete("k", o)
      assert {:error, {:no_such_bucket, ^bucket}} = Storage.get_with_metadata("k", o)

      assert {:error, {:partial, [], [{"k", {:no_such_bucket, ^bucket}}]}} =
               Storage.delete_many(["k"], o)

      error = assert_raise Storage.Error, fn -> Storage.exists?("k", o) end
      assert error.reason == {:no_such_bucket, bucket}
      assert Exception.message(error) =~ "does not exist"
    end

    test "a missing key in an existing bucket is still :not_found" do
      o = Seaweed.opts()
      assert {:error, :not_found} = Storage.head("nope", o)
      assert {:error, :not_found} = Storage.head("nope", o)
      refute Storage.exists?("nope", o)
    end

    test "through the tiered cache too", %{opts: o} do
      dir = Tmp.dir!("nsb-tiered")
      t = Keyword.merge(o, backend: :tiered, origin_backend: :s3, cache_disk_path: dir)
      bucket = o[:s3_bucket]
      assert {:error, {:no_such_bucket, ^bucket}} = Storage.get("k", t)
      assert {:error, {:no_such_bucket, ^bucket}} = Storage.head("k", t)
    end
  end

  describe "a local root that cannot be created" do
    test "is an I/O error, never :not_found" do
      assert {:error, {:io, posix}} = Storage.put("x/y", "v", local_path: "/proc/nope")
      assert is_atom(posix) and posix != :not_found
      assert {:error, {:io, _}} = Storage.list("", local_path: "/proc/nope")
      assert {:error, {:io, _}} = Storage.get("x/y", local_path: "/proc/nope")
    end

    test "the raised message names the operation, the key and the root" do
      error =
        assert_raise Storage.Error, fn ->
          Storage.put!("a/b.txt", "v", local_path: "/proc/nope")
        end

      assert {:io, posix} = error.reason
      message = Exception.message(error)
      assert message =~ ~s(put "a/b.txt" under /proc/nope: )
      assert message =~ "(#{posix})"
    end

    test "an I/O error under a root names it, through a handle as well" do
      root = Tmp.dir!("io-root")
      # A directory where the key's parent should be a file: ENOTDIR/EEXIST-like.
      File.write!(Path.join(root, "file"), "x")
      {:ok, h} = Storage.open(local_path: root)
      error = assert_raise Storage.Error, fn -> Storage.put!("file/child", "v", h) end
      assert {:io, _} = error.reason
      assert Exception.message(error) =~ ~s(put "file/child" under #{root}: )
    end
  end

  describe "redirects" do
    test "are not followed: the error names where the server pointed" do
      {target_port, target} = FixedServer.start!(200, [], "followed")

      {opts, origin} =
        opts_for("", 301, [{"location", "http://127.0.0.1:#{target_port}/elsewhere"}])

      assert {:error, {:s3_error, 301, "PermanentRedirect", message}} = Storage.get("k", opts)
      assert message =~ "127.0.0.1:#{target_port}"
      assert {:error, {:s3_error, 301, _, _}} = Storage.put("k", "v", opts)
      assert {:error, {:s3_error, 301, _, _}} = Storage.list("", opts)
      assert FixedServer.requests(origin) == 3
      assert FixedServer.requests(target) == 0
    end

    test "an S3 PermanentRedirect names the endpoint and region" do
      body =
        "<Error><Code>PermanentRedirect</Code><Message>use the other endpoint</Message>" <>
          "<Endpoint>bucket.s3.eu-west-1.amazonaws.com</Endpoint></Error>"

      {opts, _} = opts_for(body, 301, [{"x-amz-bucket-region", "eu-west-1"}])
      assert {:error, {:s3_error, 301, "PermanentRedirect", message}} = Storage.get("k", opts)
      assert message =~ "bucket.s3.eu-west-1.amazonaws.com"
      assert message =~ "eu-west-1"
    end

    test "a 307 TemporaryRedirect is an error too" do
      {opts, _} = opts_for("", 307, [{"location", "http://127.0.0.1:9/x"}])
      assert {:error, {:s3_error, 307, "TemporaryRedirect", message}} = Storage.head("k", opts)
      assert message =~ "127.0.0.1:9"
    end
  end

  describe "network errors" do
    test "name the endpoint, and no credential" do
      o =
        Seaweed.opts(
          s3_endpoint: "http://127.0.0.1:1",
          s3_max_retries: 0,
          s3_secret_access_key: "NET-SECRET-4c1d"
        )

      assert {:error, {:network, reason}} = Storage.get("k", o)
      assert reason =~ "http://127.0.0.1:1"
      refute reason =~ "NET-SECRET-4c1d"
      refute reason =~ Seaweed.access_key()
    end
  end

  describe "conditional puts and 503 SlowDown" do
    setup do
      {:ok, proxy} = FaultProxy.start_link(8333)
      endpoint = "http://127.0.0.1:#{FaultProxy.port(proxy)}"
      {:ok, proxy: proxy, via: Seaweed.opts(s3_endpoint: endpoint, s3_pool_size: 0)}
    end

    test "30% of answers 503 SlowDown: every put_if_none_match still decides", %{
      proxy: proxy,
      via: o
    } do
      faults = for i <- 1..60, do: if(rem(i * 7, 10) < 3, do: :s503, else: :pass)
      FaultProxy.inject(proxy, faults)
      o = Keyword.put(o, :s3_max_retries, 10)

      results = for i <- 1..30, do: Storage.put_if_none_match("slow/#{i}", "v", o)
      assert Enum.all?(results, &match?({:ok, _}, &1)), inspect(results)
      assert %{s503: s503} = FaultProxy.counts(proxy)
      assert s503 > 0
    end
  end

  describe "a private certificate authority" do
    setup do
      {port, ca} = Micelio.Storage.Test.TlsProxy.start!(8333, Tmp.dir!("private-ca"))
      {:ok, endpoint: "https://localhost:#{port}", ca: ca}
    end

    test "is trusted through s3_ca_cert_file", %{endpoint: endpoint, ca: ca} do
      o = Seaweed.opts(s3_endpoint: endpoint, s3_ca_cert_file: ca)
      assert {:ok, "tls/k"} = Storage.put("tls/k", "over TLS", o)
      assert {:ok, "over TLS"} = Storage.get("tls/k", o)
    end

    test "and through S3_CA_CERT_FILE", %{endpoint: endpoint, ca: ca} do
      {:ok, config} =
        Micelio.Storage.Config.resolve(Seaweed.opts(s3_endpoint: endpoint, s3_ca_cert_file: ca))

      assert config.s3_ca_cert_file == ca
      assert Micelio.Storage.Settings.fetch(:s3_ca_cert_file).env == ["S3_CA_CERT_FILE"]
    end

    test "without it the server's certificate is refused", %{endpoint: endpoint} do
      o = Seaweed.opts(s3_endpoint: endpoint, s3_max_retries: 0)
      assert {:error, {:network, reason}} = Storage.get("tls/k", o)
      assert reason =~ endpoint
    end

    test "a file that is not PEM is a config error naming the setting" do
      bad = Path.join(Tmp.dir!("bad-ca"), "not.pem")
      File.write!(bad, "not a certificate")
      o = Seaweed.opts(s3_endpoint: "https://localhost:1", s3_ca_cert_file: bad)
      assert {:error, {:invalid_config, :s3_ca_cert_file, _}} = Storage.get("k", o)
    end
  end
end
