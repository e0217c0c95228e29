defmodule Micelio.Storage.S3Test do
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{FaultProxy, Seaweed}

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  setup do
    {:ok, opts: Seaweed.opts()}
  end

  describe "authentication" do
    test "a wrong secret is refused with SignatureDoesNotMatch", %{opts: o} do
      o = Keyword.put(o, :s3_secret_access_key, "wrong-secret-value")
      assert {:error, {:forbidden, "SignatureDoesNotMatch"}} = Storage.put("k", "v", o)
      assert {:error, {:forbidden, "SignatureDoesNotMatch"}} = Storage.list("", o)
    end

    test "an unknown access key is refused", %{opts: o} do
      o = Keyword.put(o, :s3_access_key_id, "NOSUCHKEY")
      assert {:error, {:forbidden, "InvalidAccessKeyId"}} = Storage.get("k", o)
    end

    test "missing bucket or credentials fail before any request" do
      # A closed port: had a request been sent, this would be a network error.
      base = [backend: :s3, s3_endpoint: "http://127.0.0.1:1", s3_session_token: nil]

      assert {:error, :missing_s3_bucket} =
               Storage.get("k", base ++ [s3_access_key_id: "a", s3_secret_access_key: "b"])

      for creds <- [[], [s3_access_key_id: "a"], [s3_secret_access_key: "b"]] do
        o = base ++ [s3_bucket: "b", s3_access_key_id: nil, s3_secret_access_key: nil] ++ creds
        o = Keyword.merge(o, creds)
        assert {:error, :missing_s3_credentials} = Storage.get("k", o)
      end
    end

    test "secrets never show in errors or inspected config", %{opts: o} do
      secret = "super-secret-value-1234567890"
      o = Keyword.put(o, :s3_secret_access_key, secret)
      {:error, reason} = Storage.get("k", o)
      refute inspect(reason) =~ secret
      {:ok, config} = Micelio.Storage.Config.resolve(o)
      refute inspect(config) =~ secret
      e = assert_raise Storage.Error, fn -> Storage.get!("k", o) end
      refute Exception.message(e) =~ secret
      refute inspect(e) =~ secret
    end
  end

  describe "objects" do
    test "8 MiB objects round-trip intact", %{opts: o} do
      big = :crypto.strong_rand_bytes(8 * 1_048_576)
      assert {:ok, "big"} = Storage.put("big", big, o)
      assert {:ok, got} = Storage.get("big", o)
      assert byte_size(got) == byte_size(big) and got == big
      assert %{size: 8_388_608} = Storage.head!("big", o)
    end

    test "the ETag from head drives put_if_match", %{opts: o} do
      Storage.put!("etag", "v1", o)
      %{etag: etag} = Storage.head!("etag", o)
      refute String.contains?(etag, "\"")
      assert {:ok, _} = Storage.put_if_match("etag", "v2", etag, o)
      assert {:error, :precondition_failed} = Storage.put_if_match("etag", "v3", etag, o)
    end

    test "s3_prefix keeps stores apart", %{opts: o} do
      other = Keyword.put(o, :s3_prefix, o[:s3_prefix] <> "inner/")
      Storage.put!("x", "outer", o)
      Storage.put!("x", "inner", other)
      assert Storage.get!("x", o) == "outer"
      assert Storage.list!("", o) == ["inner/x", "x"]
      assert Storage.list!("", other) == ["x"]
    end
  end

  describe "list" do
    @tag timeout: 300_000
    test "more than 1,000 keys come back through continuation tokens", %{opts: o} do
      keys = for i <- 1..1_100, do: "many/#{String.pad_leading(Integer.to_string(i), 5, "0")}"

      keys
      |> Task.async_stream(&Storage.put!(&1, "x", o), max_concurrency: 32, timeout: 60_000)
      |> Stream.run()

      assert Storage.list!("many/", o) == keys
    end

    test "a small page size pages through everything", %{opts: o} do
      keys = for i <- 1..23, do: "paged/k#{i}"
      for k <- keys, do: Storage.put!(k, "x", o)
      assert Storage.list!("paged/", Keyword.put(o, :s3_list_page_size, 5)) == Enum.sort(keys)
    end
  end

  describe "presigned URLs" do
    test "work for GET and PUT with an independent client (:httpc)", %{opts: o} do
      key = "presigned/a file+&=.txt"
      {:ok, put_url} = Storage.presigned_url(key, [method: :put, expires_in: 300] ++ o)

      assert {:ok, {{_, 200, _}, _, _}} =
               :httpc.request(
                 :put,
                 {to_charlist(put_url), [], ~c"text/plain", "via presigned put"},
                 [],
                 []
               )

      assert Storage.get!(key, o) == "via presigned put"

      {:ok, get_url} = Storage.presigned_url(key, [method: :get] ++ o)

      assert {:ok, {{_, 200, _}, _, "via presigned put"}} =
               :httpc.request(:get, {to_charlist(get_url), []}, [], body_format: :binary)

      tampered = String.replace(get_url, "X-Amz-Expires=3600", "X-Amz-Expires=3601")

      assert {:ok, {{_, 403, _}, _, _}} =
               :httpc.request(:get, {to_charlist(tampered), []}, [], [])
    end

    test "are reproducible with an explicit datetime", %{opts: o} do
      at = ~U[2026-03-01 10:00:00Z]

      assert Storage.presigned_url("k", [datetime: at] ++ o) ==
               Storage.presigned_url("k", [datetime: at] ++ o)

      refute Storage.presigned_url("k", [datetime: at] ++ o) ==
               Storage.presigned_url("k", [datetime: 0] ++ o)
    end
  end

  describe "sign_headers/4" do
    test "signs requests the real server accepts" do
      assert {:ok, {{_, 200, _}, _, body}} = Seaweed.signed_request(:get, "/", "")
      assert to_string(body) =~ Seaweed.bucket()
    end
  end

  describe "failures and retries" do
    setup %{opts: o} do
      {:ok, proxy} = FaultProxy.start_link(8333)
      endpoint = "http://127.0.0.1:#{FaultProxy.port(proxy)}"
      {:ok, proxy: proxy, via: Keyword.merge(o, s3_endpoint: endpoint, s3_pool_size: 0)}
    end

    test "dropped connections and 503s are retried; no data is lost or corrupted", %{
      proxy: proxy,
      via: o
    } do
      values = for i <- 1..10, into: %{}, do: {"r/#{i}", :crypto.strong_rand_bytes(50_000 + i)}

      for {k, v} <- values do
        FaultProxy.inject(proxy, [:drop, :s503])
        assert {:ok, ^k} = Storage.put(k, v, o)
      end

      for {k, v} <- values do
        FaultProxy.inject(proxy, [:s503, :drop])
        assert {:ok, ^v} = Storage.get(k, o)
      end

      FaultProxy.inject(proxy, [:drop, :s503, :drop])
      assert Storage.list!("r/", o) == Enum.sort(Map.keys(values))
      # 10 puts, 10 gets and one list each passed once, after their faults.
      assert %{drop: 22, s503: 21, pass: 21} = FaultProxy.counts(proxy)
    end

    test "gives up after max_retries with the last error", %{proxy: proxy, via: o} do
      FaultProxy.inject(proxy, [:s503, :s503, :s503])

      assert {:error, {:s3_error, 503, "SlowDown", _}} =
               Storage.get("x", Keyword.put(o, :s3_max_retries, 2))
    end

    test "a conditional put that reached the server is not replayed", %{proxy: proxy, via: o} do
      FaultProxy.inject(proxy, [:drop])
      assert {:error, {:network, _}} = Storage.put_if_none_match("once", "v", o)
      assert {:error, :not_found} = Storage.get("once", o)
    end

    # A 503 SlowDown or a 429 says the server did not apply the request.
    test "a conditional put answered 503 SlowDown is retried", %{proxy: proxy, via: o} do
      FaultProxy.inject(proxy, [:s503, :s503])
      assert {:ok, "once-503"} = Storage.put_if_none_match("once-503", "v", o)
      assert Storage.get!("once-503", o) == "v"
      etag = Storage.head!("once-503", o).etag
      FaultProxy.inject(proxy, [:s503])
      assert {:ok, _} = Storage.put_if_match("once-503", "v2", etag, o)
      assert Storage.get!("once-503", o) == "v2"
      assert %{s503: 3} = FaultProxy.counts(proxy)
    end

    test "a refused connection is a network error", %{opts: o} do
      o = Keyword.merge(o, s3_endpoint: "http://127.0.0.1:1", s3_max_retries: 0)
      assert {:error, {:network, reason}} = Storage.get("k", o)
      assert is_binary(reason)
    end

    test "a server that never answers gives :timeout", %{opts: o} do
      {:ok, listen} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
      {:ok, port} = :inet.port(listen)
      o = Keyword.merge(o, s3_endpoint: "http://127.0.0.1:#{port}", timeout: 300)
      assert {:error, :timeout} = Storage.get("k", o)
    end
  end
end
