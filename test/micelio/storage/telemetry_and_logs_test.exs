defmodule Micelio.Storage.TelemetryAndLogsTest do
  # Telemetry through the real :telemetry (a handler that forwards every
  # event of this library to the test), and the engine's logs through a
  # real :logger handler. Handlers are global: not async.
  use ExUnit.Case, async: false

  alias Micelio.Storage
  alias Micelio.Storage.Test.{FaultProxy, Seaweed, Tmp}

  @moduletag :s3

  # Every event this library can emit, for the real :telemetry (a
  # dependency of Plug): each function of the facade, in its three phases.
  @events for {name, _arity} <- Micelio.Storage.__info__(:functions),
              phase <- [:start, :stop, :exception],
              uniq: true,
              do: [:micelio, :storage, name, phase]

  @doc false
  def forward(event, measurements, metadata, pid),
    do: send(pid, {:telemetry, event, measurements, metadata})

  setup_all do
    # :telemetry is an optional dependency: the app that has it starts it.
    {:ok, _} = Application.ensure_all_started(:telemetry)
    :ok = Seaweed.ensure_started()
  end

  setup do
    id = {__MODULE__, make_ref()}
    :ok = :telemetry.attach_many(id, @events, &__MODULE__.forward/4, self())
    on_exit(fn -> :telemetry.detach(id) end)
  end

  defp events do
    receive do
      {:telemetry, event, m, meta} -> [{event, m, meta} | events()]
    after
      0 -> []
    end
  end

  describe "telemetry" do
    test "each operation sends :start and :stop with duration, bytes and metadata" do
      root = Tmp.dir!("telemetry")
      o = [local_path: root]
      assert Micelio.Storage.Telemetry.enabled?()

      Storage.put!("t/a.txt", "hello", o)

      assert_received {:telemetry, [:micelio, :storage, :put, :start], %{system_time: _},
                       %{backend: :local, store: Micelio.Storage, key: "t/a.txt"}}

      assert_received {:telemetry, [:micelio, :storage, :put, :stop], %{duration: d, bytes: 5},
                       %{backend: :local, key: "t/a.txt", result: :ok, retries: 0}}

      assert is_integer(d) and d > 0

      assert {:ok, "hello"} = Storage.get("t/a.txt", o)

      assert_received {:telemetry, [:micelio, :storage, :get, :stop], %{bytes: 5}, %{result: :ok}}

      assert {:error, :not_found} = Storage.get("t/none", o)

      assert_received {:telemetry, [:micelio, :storage, :get, :stop], %{bytes: 0},
                       %{result: :not_found, key: "t/none"}}

      refute Storage.exists?("t/none", o)
      assert_received {:telemetry, [:micelio, :storage, :head, :stop], _, %{result: :not_found}}

      Storage.list!("t/", o)
      assert_received {:telemetry, [:micelio, :storage, :list, :stop], _, %{key: "t/"}}
      Storage.copy!("t/a.txt", "t/b.txt", o)
      assert_received {:telemetry, [:micelio, :storage, :copy, :stop], _, %{result: :ok}}
      Storage.delete_many!(["t/a.txt", "t/b.txt"], o)
      assert_received {:telemetry, [:micelio, :storage, :delete_many, :stop], _, %{key: nil}}
      :ok = Storage.health(o)
      assert_received {:telemetry, [:micelio, :storage, :health, :stop], _, %{result: :ok}}
    end

    test "tiered reads say which tier answered; RAM hits send no event but are counted" do
      dir = Tmp.dir!("telemetry-tiered")

      o = [
        backend: :tiered,
        origin_backend: :local,
        local_path: Path.join(dir, "origin"),
        cache_disk_path: Path.join(dir, "cache")
      ]

      Storage.put!("k", "value", o)
      _ = events()
      assert {:ok, "value"} = Storage.get("k", o)

      assert [{_, _, %{tier: :origin, result: :ok}}] =
               for({[:micelio, :storage, :get, :stop], _, _} = e <- events(), do: e)

      assert {:ok, "value"} = Storage.get("k", o)
      assert events() == []
      assert {:ok, %{memory: %{hits: 1}}} = Storage.stats(o)

      no_ram = Keyword.merge(o, cache_memory_max_bytes: 0, cache_disk_path: Path.join(dir, "c2"))
      Storage.get!("k", no_ram)
      _ = events()
      Storage.get!("k", no_ram)

      assert [{_, %{bytes: 5}, %{tier: :disk}}] =
               for({[:micelio, :storage, :get, :stop], _, _} = e <- events(), do: e)
    end

    test "S3 retries are counted in the :stop metadata" do
      {:ok, proxy} = FaultProxy.start_link(8333)
      endpoint = "http://127.0.0.1:#{FaultProxy.port(proxy)}"
      o = Seaweed.opts(s3_endpoint: endpoint, s3_pool_size: 0)
      Storage.put!("r", "v", o)
      _ = events()
      FaultProxy.inject(proxy, [:s503, :drop])
      assert {:ok, "v"} = Storage.get("r", o)

      assert_received {:telemetry, [:micelio, :storage, :get, :stop], _,
                       %{retries: 2, backend: :s3, result: :ok}}
    end

    test "transfers report the bytes they moved, on local and S3" do
      for {name, o} <- [
            local: [local_path: Tmp.dir!("telemetry-transfers")],
            s3: Seaweed.opts(s3_multipart_threshold: 5_242_880, s3_part_size: 5_242_880)
          ] do
        src = Path.join(Tmp.dir!("telemetry-src"), "six")
        content = :binary.copy("t", 6_000_000)
        File.write!(src, content)
        _ = events()

        {:ok, _} = Storage.put_file("big", src, o)

        assert_received {:telemetry, [:micelio, :storage, :put_file, :stop], %{bytes: 6_000_000},
                         %{result: :ok}},
                        "#{name} put_file"

        {:ok, _} = Storage.put_stream("streamed", Stream.take(Stream.cycle(["abc"]), 4), o)

        assert_received {:telemetry, [:micelio, :storage, :put_stream, :stop], %{bytes: 12},
                         %{result: :ok}},
                        "#{name} put_stream"

        dest = Path.join(Tmp.dir!("telemetry-dest"), "out")
        {:ok, _} = Storage.get_file("big", dest, o)

        assert_received {:telemetry, [:micelio, :storage, :get_file, :stop], %{bytes: 6_000_000},
                         %{result: :ok}},
                        "#{name} get_file"

        {:ok, _} = Storage.copy("streamed", "copied", o)

        assert_received {:telemetry, [:micelio, :storage, :copy, :stop], %{bytes: 12},
                         %{result: :ok}},
                        "#{name} copy"
      end
    end

    test "stream/2 and stream_keys/2 send :start, then :stop with bytes or keys" do
      o = [local_path: Tmp.dir!("telemetry-streams")]
      Storage.put!("s/a", "0123456789", o)
      Storage.put!("s/b", "x", o)
      _ = events()

      stream = Storage.stream("s/a", o)
      # Nothing happens until enumeration begins.
      assert events() == []
      assert Enum.join(stream) == "0123456789"

      assert [
               {[:micelio, :storage, :stream, :start], %{system_time: _},
                %{key: "s/a", backend: :local}},
               {[:micelio, :storage, :stream, :stop], %{bytes: 10, duration: d}, %{result: :ok}}
             ] = events()

      assert d > 0

      assert ["s/a", "s/b"] = Storage.stream_keys("s/", o) |> Enum.to_list()

      assert [
               {[:micelio, :storage, :stream_keys, :start], _, %{key: "s/"}},
               {[:micelio, :storage, :stream_keys, :stop], %{keys: 2}, %{result: :ok}}
             ] = events()

      # Halted early: :stop with what was read.
      assert ["s/a"] = Storage.stream_keys("s/", [page_size: 1] ++ o) |> Enum.take(1)

      assert [_, {[:micelio, :storage, :stream_keys, :stop], %{keys: 1}, _}] = events()
    end

    test "a stream that raises sends :exception, not :stop" do
      o = [local_path: Tmp.dir!("telemetry-stream-raise")]
      assert_raise Micelio.Storage.Error, fn -> Storage.stream("missing", o) |> Enum.to_list() end

      assert [
               {[:micelio, :storage, :stream, :start], _, _},
               {[:micelio, :storage, :stream, :exception], %{duration: _},
                %{kind: :error, reason: %Micelio.Storage.Error{reason: :not_found}}}
             ] = events()
    end

    test "result is a bounded atom; the whole reason is under :reason" do
      o = [local_path: Tmp.dir!("telemetry-result")]
      assert {:error, {:invalid_key, _}} = Storage.get("../escape", o)

      assert_received {:telemetry, [:micelio, :storage, :get, :stop], _,
                       %{result: :invalid_key, reason: {:invalid_key, "../escape"}}}

      assert {:error, :not_found} = Storage.get("absent", o)

      assert_received {:telemetry, [:micelio, :storage, :get, :stop], _,
                       %{result: :not_found, reason: :not_found}}

      {:ok, _} = Storage.put("p", "v", o)
      assert_received {:telemetry, [:micelio, :storage, :put, :stop], _, meta}
      assert meta.result == :ok
      refute Map.has_key?(meta, :reason)
    end

    test "a call that raises sends :exception" do
      {:ok, h} = Storage.open(local_path: Tmp.dir!("telemetry-raise"))
      broken = %{h | store: make_ref()}
      assert_raise ArgumentError, fn -> Storage.put("k", "v", broken) end

      assert_received {:telemetry, [:micelio, :storage, :put, :exception], %{duration: _},
                       %{kind: :error, reason: %ArgumentError{}}}
    end
  end

  describe "logs" do
    defmodule Handler do
      def log(event, %{config: %{pid: pid}}), do: send(pid, {:log, event})
    end

    setup do
      :ok = :logger.add_handler(:micelio_test_handler, Handler, %{config: %{pid: self()}})
      previous = Logger.level()
      Logger.configure(level: :debug)

      on_exit(fn ->
        :logger.remove_handler(:micelio_test_handler)
        Logger.configure(level: previous)
        Logger.delete_module_level(Micelio.Storage.Log)
      end)
    end

    defp logs(acc \\ []) do
      receive do
        {:log, %{msg: {:string, msg}, level: level, meta: meta}} ->
          logs([{level, IO.chardata_to_string(msg), meta} | acc])

        {:log, _other} ->
          logs(acc)
      after
        300 -> Enum.reverse(acc)
      end
    end

    test "retries at debug and give-ups at warning, with endpoint, operation and attempt" do
      {:ok, proxy} = FaultProxy.start_link(8333)
      endpoint = "http://127.0.0.1:#{FaultProxy.port(proxy)}"

      o =
        Seaweed.opts(
          s3_endpoint: endpoint,
          s3_pool_size: 0,
          s3_max_retries: 2,
          s3_secret_access_key: Seaweed.secret_key()
        )

      FaultProxy.inject(proxy, [:s503, :s503, :s503])
      assert {:error, {:s3_error, 503, _, _}} = Storage.get("x", o)
      logs = logs()

      assert [{:debug, retry, meta} | _] = Enum.filter(logs, &(elem(&1, 0) == :debug))
      assert retry =~ "retrying"
      assert meta.endpoint == endpoint
      assert meta.operation == "GET"
      assert meta.attempt == "1"

      assert [{:warning, gave_up, %{attempt: "3"}}] =
               Enum.filter(logs, &(elem(&1, 0) == :warning))

      assert gave_up =~ "gave up"

      for {_, msg, meta} <- logs do
        refute msg =~ Seaweed.secret_key()
        refute inspect(meta) =~ Seaweed.secret_key()
      end
    end

    test "credential refreshes are logged, never the credentials" do
      alias Micelio.Storage.Test.CredentialsServer

      server =
        CredentialsServer.start!(
          access_key_id: Seaweed.access_key(),
          secret_access_key: Seaweed.secret_key(),
          authorization: "log-test-token-9d2"
        )

      on_exit(fn -> CredentialsServer.stop(server) end)

      o =
        Seaweed.opts(
          s3_access_key_id: nil,
          s3_secret_access_key: nil,
          s3_credentials: :container,
          s3_container_credentials_uri: server.url <> "/creds",
          s3_container_authorization_token: "log-test-token-9d2"
        )

      assert {:error, :not_found} = Storage.get("none", o)
      logs = logs()

      assert [{:info, refreshed, %{source: "container"}}] =
               Enum.filter(logs, &(elem(&1, 0) == :info))

      assert refreshed =~ "refreshed S3 credentials from the container endpoint"

      for {_, msg, meta} <- logs, secret <- [Seaweed.secret_key(), "log-test-token-9d2"] do
        refute msg =~ secret
        refute inspect(meta) =~ secret
      end
    end

    test "apps can silence them by module level" do
      {:ok, proxy} = FaultProxy.start_link(8333)
      o = Seaweed.opts(s3_endpoint: "http://127.0.0.1:#{FaultProxy.port(proxy)}", s3_pool_size: 0)
      Logger.put_module_level(Micelio.Storage.Log, :none)
      FaultProxy.inject(proxy, [:s503])
      assert {:error, :not_found} = Storage.get("absent", o)
      assert Enum.filter(logs(), fn {_, msg, _} -> msg =~ "S3 " end) == []
    end
  end
end
