defmodule Micelio.Storage.HostileServersTest do
  # What an S3 endpoint, a CDN or a credentials endpoint sends can make a
  # call fail, never make the VM allocate what the peer asks for, never
  # pass off a failure as a success or as another failure. The servers are
  # real: a :gen_tcp server with rules (test/support/hostile_server.ex),
  # alone or in front of SeaweedFS.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{HostileServer, Seaweed, Tmp}

  @moduletag :s3
  @gib 1_073_741_824

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  defp upstream_port, do: URI.parse(Seaweed.endpoint()).port

  # Options for a store whose requests go through `server`.
  defp through(server, extra \\ []) do
    Seaweed.opts(
      [s3_endpoint: HostileServer.endpoint(server), s3_pool_size: 0, timeout: 10_000] ++ extra
    )
  end

  # The most the BEAM's binary memory rose above `base` while `fun` ran.
  defp peak_binary_growth(fun) do
    base = :erlang.memory(:binary)
    me = self()
    sampler = spawn_link(fn -> sample(me, base, 0) end)
    result = fun.()
    send(sampler, :stop)

    receive do
      {:peak, peak} -> {result, peak}
    end
  end

  defp sample(owner, base, peak) do
    receive do
      :stop -> send(owner, {:peak, peak})
    after
      1 -> sample(owner, base, max(peak, :erlang.memory(:binary) - base))
    end
  end

  describe "a Content-Length that lies" do
    test "a GET answer claiming 1 GiB and sending 10 bytes is a network error, not 1 GiB reserved" do
      server =
        HostileServer.start!(fn
          %{method: "HEAD"} ->
            {:reply, 200, [{"etag", ~s("e")}, {"content-length-hint", "x"}], ""}

          %{method: "GET"} ->
            {:lie, 200, [{"etag", ~s("e")}], @gib, "0123456789"}
        end)

      o = through(server, s3_max_retries: 0)

      {results, peak} =
        peak_binary_growth(fn ->
          1..16
          |> Task.async_stream(fn i -> Storage.get("k#{i}", o) end, max_concurrency: 16)
          |> Enum.map(fn {:ok, r} -> r end)
        end)

      for r <- results, do: assert({:error, {:network, _}} = r)
      # Sixteen answers of 1 GiB each were promised; a few KiB each arrived.
      assert peak < 64 * 1_048_576, "binary memory rose by #{peak} bytes"
    end

    test "an XML answer larger than 16 MiB is an error, not a parse of it" do
      big = "<ListBucketResult>" <> String.duplicate(" ", 17 * 1_048_576) <> "</ListBucketResult>"
      server = HostileServer.start!(fn _ -> {:reply, 200, [], big} end)

      assert {:error, {:network, message}} = Storage.list("", through(server, s3_max_retries: 0))
      assert message =~ "16 MiB"
    end

    test "a CDN tier that lies about its length is a miss served from the origin" do
      cdn = HostileServer.start!(fn _ -> {:lie, 200, [{"etag", ~s("e")}], @gib, "abc"} end)
      dir = Tmp.dir!("hostile-cdn")

      o = [
        backend: :tiered,
        origin_backend: :local,
        local_path: Path.join(dir, "origin"),
        cache_disk_path: Path.join(dir, "cache"),
        cdn_base_url: HostileServer.endpoint(cdn)
      ]

      File.mkdir_p!(Path.join(dir, "origin"))
      File.write!(Path.join([dir, "origin", "k"]), "from the origin")
      assert Storage.get("k", o) == {:ok, "from the origin"}
      assert HostileServer.requests(cdn) != []
    end

    test "a credentials endpoint that lies about its length is a credentials error" do
      creds = HostileServer.start!(fn _ -> {:lie, 200, [], @gib, "{\"AccessKeyId\":"} end)

      o =
        Seaweed.opts(s3_access_key_id: nil, s3_secret_access_key: nil, timeout: 10_000)
        |> Keyword.merge(
          s3_credentials: :container,
          s3_container_credentials_uri: HostileServer.endpoint(creds) <> "/creds"
        )

      assert {:error, {:credentials, _}} = Storage.get("k", o)
    end

    test "a credentials endpoint answering more than 16 MiB is a credentials error" do
      big = "{\"AccessKeyId\":\"" <> String.duplicate("A", 17 * 1_048_576) <> "\"}"
      creds = HostileServer.start!(fn _ -> {:reply, 200, [], big} end)

      o =
        Seaweed.opts(s3_access_key_id: nil, s3_secret_access_key: nil, timeout: 10_000)
        |> Keyword.merge(
          s3_credentials: :container,
          s3_container_credentials_uri: HostileServer.endpoint(creds) <> "/creds"
        )

      assert {:error, {:credentials, message}} = Storage.get("k", o)
      assert message =~ "16 MiB"
    end

    @tag timeout: 180_000
    test "a VM under ulimit -v receiving 64 lying answers at once stays up" do
      server =
        HostileServer.start!(fn _ -> {:lie, 200, [{"etag", ~s("e")}], @gib, "0123456789"} end)

      ebin = :code.lib_dir(:micelio_storage, :ebin)

      script = """
      Application.ensure_all_started(:micelio_storage)
      o = [backend: :s3, s3_bucket: "b", s3_region: "us-east-1",
           s3_endpoint: #{inspect(HostileServer.endpoint(server))},
           s3_access_key_id: "id", s3_secret_access_key: "secret",
           s3_pool_size: 0, s3_max_retries: 0, timeout: 20_000]
      results =
        1..64
        |> Task.async_stream(fn i -> Micelio.Storage.get("k\#{i}", o) end,
             max_concurrency: 64, timeout: 60_000)
        |> Enum.map(fn {:ok, r} -> r end)
      network = Enum.count(results, &match?({:error, {:network, _}}, &1))
      IO.puts("network errors: \#{network}")
      """

      cmd = "ulimit -v 8388608; exec elixir -pa #{ebin} -e \"$SCRIPT\""

      {out, status} =
        System.cmd("bash", ["-c", cmd], env: [{"SCRIPT", script}], stderr_to_stdout: true)

      assert status == 0, out
      assert out =~ "network errors: 64"
    end
  end

  describe "a 200 that carries no result" do
    setup do
      key = "copy-src-#{System.unique_integer([:positive])}"
      server = HostileServer.start!(fn _ -> :pass end, upstream_port())
      o = through(server)
      {:ok, _} = Storage.put(key, "source", o)
      {:ok, server: server, o: o, key: key}
    end

    defp copy_answers(server, body) do
      HostileServer.set_rule(server, fn
        %{method: "PUT", headers: %{"x-amz-copy-source" => _}} -> {:reply, 200, [], body}
        _ -> :pass
      end)
    end

    for {name, body} <- [
          html: "<html><body>Gateway says hi</body></html>",
          empty: "",
          cut: "<?xml version=\"1.0\"?><CopyObjectResult><ETag>\"abc\"</ETag>",
          other_document: "<ListBucketResult></ListBucketResult>"
        ] do
      test "CopyObject answered 200 with #{name} body is MalformedXML", %{
        server: server,
        o: o,
        key: key
      } do
        copy_answers(server, unquote(body))

        assert {:error, {:s3_error, 200, "MalformedXML", _}} =
                 Storage.copy(key, key <> "-dest", o)
      end
    end

    test "CopyObject answered 200 with an <Error> is that error", %{
      server: server,
      o: o,
      key: key
    } do
      copy_answers(server, HostileServer.error_xml("AccessDenied"))
      assert {:error, {:forbidden, "AccessDenied"}} = Storage.copy(key, key <> "-d", o)
    end

    test "CopyObject answered 200 InternalError is retried like a 5xx", %{
      server: server,
      o: o,
      key: key
    } do
      failures = :counters.new(1, [])

      HostileServer.set_rule(server, fn
        %{method: "PUT", headers: %{"x-amz-copy-source" => _}} ->
          if :counters.get(failures, 1) < 1 do
            :counters.add(failures, 1, 1)
            {:reply, 200, [], HostileServer.error_xml("InternalError")}
          else
            :pass
          end

        _ ->
          :pass
      end)

      assert {:ok, _} = Storage.copy(key, key <> "-retried", o)
      assert Storage.get(key <> "-retried", o) == {:ok, "source"}

      copies =
        Enum.count(HostileServer.requests(server), fn {m, p, _} ->
          m == "PUT" and String.ends_with?(p, "-retried")
        end)

      assert copies == 2
    end

    test "CompleteMultipartUpload answered 200 SlowDown is retried", %{server: server, o: o} do
      failures = :counters.new(1, [])

      HostileServer.set_rule(server, fn
        %{method: "POST", query: %{"uploadId" => _}} ->
          if :counters.get(failures, 1) < 1 do
            :counters.add(failures, 1, 1)
            {:reply, 200, [], HostileServer.error_xml("SlowDown")}
          else
            :pass
          end

        _ ->
          :pass
      end)

      path = Path.join(Tmp.dir!("hostile-mp"), "six")
      File.write!(path, :binary.copy("m", 6 * 1_048_576))
      mp = o ++ [s3_multipart_threshold: 5 * 1_048_576, s3_part_size: 5 * 1_048_576]
      assert {:ok, "big"} = Storage.put_file("big", path, mp)
      assert {:ok, %{size: 6_291_456}} = Storage.head("big", o)
    end
  end

  describe "not found means not found" do
    setup do
      server = HostileServer.start!(fn _ -> :pass end, upstream_port())
      path = Path.join(Tmp.dir!("hostile-404"), "six")
      File.write!(path, :binary.copy("n", 6 * 1_048_576))

      o = through(server, s3_multipart_threshold: 5 * 1_048_576, s3_part_size: 5 * 1_048_576)

      {:ok, server: server, o: o, path: path}
    end

    test "UploadPart answered 404 NoSuchUpload is not :not_found", %{
      server: server,
      o: o,
      path: path
    } do
      HostileServer.set_rule(server, fn
        %{method: "PUT", query: %{"partNumber" => _}} ->
          {:reply, 404, [], HostileServer.error_xml("NoSuchUpload", "The upload was aborted")}

        _ ->
          :pass
      end)

      assert {:error, {:s3_error, 404, "NoSuchUpload", _}} = Storage.put_file("p", path, o)
    end

    test "CompleteMultipartUpload answered 404 NoSuchUpload is not :not_found", %{
      server: server,
      o: o,
      path: path
    } do
      HostileServer.set_rule(server, fn
        %{method: "POST", query: %{"uploadId" => _}} ->
          {:reply, 404, [], HostileServer.error_xml("NoSuchUpload")}

        _ ->
          :pass
      end)

      assert {:error, {:s3_error, 404, "NoSuchUpload", _}} = Storage.put_file("p", path, o)
    end

    test "a GET 404 with another code, or an HTML 404 page, is not :not_found", %{
      server: server,
      o: o
    } do
      HostileServer.set_rule(server, fn %{method: "GET"} ->
        {:reply, 404, [], HostileServer.error_xml("NoSuchLifecycleConfiguration")}
      end)

      assert {:error, {:s3_error, 404, "NoSuchLifecycleConfiguration", _}} = Storage.get("k", o)

      HostileServer.set_rule(server, fn _ -> {:reply, 404, [], "<html>no</html>"} end)
      assert {:error, {:s3_error, 404, _, _}} = Storage.get("k", o)
    end

    test "NoSuchKey and a HEAD 404 stay :not_found; NoSuchBucket stays itself", %{o: o} do
      assert Storage.get("missing", o) == {:error, :not_found}
      assert Storage.head("missing", o) == {:error, :not_found}
      gone = Keyword.put(o, :s3_bucket, "no-such-bucket-#{System.unique_integer([:positive])}")
      assert {:error, {:no_such_bucket, _}} = Storage.get("missing", gone)
    end
  end

  defmodule LogForwarder do
    @moduledoc false
    def log(%{level: level, msg: {:string, msg}}, %{config: %{pid: pid}}),
      do: send(pid, {:log, level, IO.chardata_to_string(msg)})

    def log(_event, _config), do: :ok
  end

  # The log lines that start with `said`, until none came for a while.
  defp logs_saying(said, wait) do
    receive do
      {:log, level, msg} ->
        if String.starts_with?(msg, said),
          do: [{level, msg} | logs_saying(said, 500)],
          else: logs_saying(said, wait)
    after
      wait -> []
    end
  end

  describe "a server whose clock is an hour ahead" do
    # Accepts only requests signed within 5 minutes of its clock (now + 1 h);
    # answers others as AWS does. `served` counts what it accepted.
    defp skewed_server(served) do
      HostileServer.start!(fn req ->
        server_now = System.os_time(:second) + 3600
        {:ok, signed, 0} = DateTime.from_iso8601(amz_date(req.headers["x-amz-date"]))

        cond do
          abs(DateTime.to_unix(signed) - server_now) > 300 and req.method == "HEAD" ->
            {:reply, 403, [{"date", HostileServer.http_date(3600)}], ""}

          abs(DateTime.to_unix(signed) - server_now) > 300 ->
            {:reply, 403, [{"date", HostileServer.http_date(3600)}],
             HostileServer.error_xml("RequestTimeTooSkewed")}

          true ->
            :counters.add(served, 1, 1)

            {:reply, 200, [{"etag", ~s("abc")}, {"date", HostileServer.http_date(3600)}], "hello"}
        end
      end)
    end

    defp amz_date(
           <<y::binary-4, m::binary-2, d::binary-2, "T", h::binary-2, mi::binary-2, s::binary-2,
             "Z">>
         ),
         do: "#{y}-#{m}-#{d}T#{h}:#{mi}:#{s}Z"

    test "RequestTimeTooSkewed is corrected from Date, retried once, and remembered" do
      served = :counters.new(1, [])
      server = skewed_server(served)
      o = through(server, s3_max_retries: 0)
      {:ok, handle} = Storage.open(o)

      handler = :"skew_log_#{System.unique_integer([:positive])}"
      :ok = :logger.add_handler(handler, __MODULE__.LogForwarder, %{config: %{pid: self()}})
      on_exit(fn -> :logger.remove_handler(handler) end)

      assert Storage.get("k", handle) == {:ok, "hello"}
      assert Storage.get("k", handle) == {:ok, "hello"}

      # One refused, then two accepted: the second call was signed right.
      assert length(HostileServer.requests(server)) == 3
      assert :counters.get(served, 1) == 2

      # Logged once, at :warning, for this store's endpoint.
      said = "the clock of the S3 server at #{HostileServer.endpoint(server)} is"
      assert [{:warning, _}] = logs_saying(said, 5_000)

      {:ok, url} = Storage.presigned_url("k", storage: handle)
      date = URI.decode_query(URI.parse(url).query)["X-Amz-Date"]
      {:ok, signed, 0} = DateTime.from_iso8601(amz_date(date))
      assert_in_delta DateTime.to_unix(signed), System.os_time(:second) + 3600, 60
    end

    test "a HEAD refused with a skewed Date is corrected too" do
      served = :counters.new(1, [])
      server = skewed_server(served)
      o = through(server, s3_max_retries: 0)
      assert {:ok, %{etag: "abc"}} = Storage.head("k", o)
      assert :counters.get(served, 1) == 1
    end

    test "a 403 whose Date is close is not taken for skew" do
      server =
        HostileServer.start!(fn _ ->
          {:reply, 403, [{"date", HostileServer.http_date(0)}],
           HostileServer.error_xml("AccessDenied")}
        end)

      assert Storage.get("k", through(server)) == {:error, {:forbidden, "AccessDenied"}}
      assert length(HostileServer.requests(server)) == 1
    end
  end

  describe "a stream from S3" do
    # Each GET's Range and If-Match, sent to the test as the server sees them.
    defp reporting_gets(then) do
      me = self()
      gets = :atomics.new(1, [])

      fn
        %{method: "GET", headers: h} ->
          send(me, {:get, h["range"], h["if-match"]})
          then.(:atomics.add_get(gets, 1, 1))

        _ ->
          :pass
      end
    end

    defp gets_seen(acc \\ []) do
      receive do
        {:get, range, if_match} -> gets_seen([{range, if_match} | acc])
      after
        0 -> Enum.reverse(acc)
      end
    end

    test "is one GET of the whole object, not a GET per part" do
      content = :crypto.strong_rand_bytes(12 * 1_048_576 + 5)
      server = HostileServer.start!(reporting_gets(fn _ -> :pass end), upstream_port())
      # Parts of 5 MiB: a stream read part by part would make three GETs.
      o = through(server, s3_part_size: 5 * 1_048_576)
      {:ok, _} = Storage.put("streamed/whole", content, o)

      assert "streamed/whole" |> Storage.stream(o) |> Enum.join() == content
      assert [{"bytes=0-12582916", etag}] = gets_seen()
      assert etag =~ ~r/^"[^"]+"$/
    end

    test "a body cut part-way resumes where it stopped, asking If-Match" do
      content = :crypto.strong_rand_bytes(6 * 1_048_576)
      # The first answer stops after 3 MB (headers included); the rest pass.
      cut_first = fn n -> if n == 1, do: {:truncate, 3_000_000}, else: :pass end
      server = HostileServer.start!(reporting_gets(cut_first), upstream_port())
      o = through(server)
      {:ok, _} = Storage.put("streamed/cut", content, o)

      assert "streamed/cut" |> Storage.stream(o) |> Enum.join() == content
      assert [{"bytes=0-6291455", etag}, {"bytes=" <> resumed, etag}] = gets_seen()
      [from, "6291455"] = String.split(resumed, "-")
      # Everything before the cut was kept, nothing asked for twice.
      assert String.to_integer(from) in 2_000_000..3_000_000
    end
  end
end
