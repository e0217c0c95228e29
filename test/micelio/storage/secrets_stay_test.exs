defmodule Micelio.Storage.SecretsStayTest do
  # Secrets never leave the library: not through a supervisor's reports
  # (a named store's start options), not through a crash dump (persistent
  # terms are dumped), not through a raised error or its stack trace,
  # whatever the shape of the options.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.Tmp

  defmodule ReportCatcher do
    @moduledoc false
    def log(event, %{config: %{pid: pid}}), do: send(pid, {:event, event})
  end

  defmodule Artifacts do
    use Micelio.Storage, otp_app: :micelio_secrets_stay_test
  end

  defp secret, do: "stay-secret-" <> Base.encode16(:crypto.strong_rand_bytes(10))

  defp s3_opts(secret) do
    [
      backend: :s3,
      s3_bucket: "b",
      s3_region: "us-east-1",
      s3_endpoint: "http://127.0.0.1:1",
      s3_access_key_id: "id",
      s3_secret_access_key: secret
    ]
  end

  # Every way a handler may print an event.
  defp printed(event) do
    [
      inspect(event, limit: :infinity, printable_limit: :infinity),
      IO.chardata_to_string(:io_lib.format(~c"~p", [event]))
    ]
  end

  defp events(acc) do
    receive do
      {:event, e} -> events([e | acc])
    after
      300 -> acc
    end
  end

  test "a named store's start options never reach the supervisor's reports" do
    s = secret()
    handler = :"secrets_stay_#{System.unique_integer([:positive])}"
    :ok = :logger.add_handler(handler, ReportCatcher, %{config: %{pid: self()}, level: :all})
    on_exit(fn -> :logger.remove_handler(handler) end)
    Process.flag(:trap_exit, true)

    # One that boots (progress report), one that fails (start error report).
    {:ok, sup} = Supervisor.start_link([{Artifacts, s3_opts(s)}], strategy: :one_for_one)
    assert {:ok, _} = Artifacts.presigned_url("k")
    Supervisor.stop(sup)

    bad = s3_opts(s) ++ [s3_part_size: 1]
    assert {:error, _} = Supervisor.start_link([{Artifacts, bad}], strategy: :one_for_one)

    seen = events([])
    assert seen != [], "the handler saw no report"

    for event <- seen, text <- printed(event) do
      refute text =~ s
    end
  end

  test "options given as an improper list are an error that shows none of them" do
    s = secret()
    improper = [{:backend, :s3}, {:s3_secret_access_key, s} | :tail]
    file = Path.join(Tmp.dir!("improper"), "f")
    File.write!(file, "x")

    calls = [
      fn -> Storage.get("k", improper) end,
      fn -> Storage.put("k", "v", improper) end,
      fn -> Storage.head("k", improper) end,
      fn -> Storage.list("", improper) end,
      fn -> Storage.put_file("k", file, improper) end,
      fn -> Storage.put_stream("k", ["x"], improper) end,
      fn -> Storage.presigned_url("k", improper) end,
      fn -> Storage.put_content_addressed("x", improper) end,
      fn -> Storage.open(improper) end,
      fn -> Storage.stream_keys("", improper) |> Enum.to_list() end,
      fn -> Storage.stream("k", improper) |> Enum.to_list() end,
      fn -> Micelio.Storage.S3.abort_incomplete_uploads("", improper) end,
      fn -> Artifacts.get("k", improper) end
    ]

    for call <- calls do
      outcome =
        try do
          {:returned, call.()}
        rescue
          e -> {:raised, Exception.message(e), __STACKTRACE__}
        catch
          kind, reason -> {kind, reason, __STACKTRACE__}
        end

      refute inspect(outcome, limit: :infinity, printable_limit: :infinity) =~ s

      case outcome do
        {:returned, result} ->
          assert {:error, {:invalid_config, :options, message}} = result
          assert message =~ "improper list"

        {:raised, message, _} ->
          assert message =~ "improper list"
      end
    end
  end

  @tag timeout: 120_000
  test "the app config's secret is not in an erl_crash.dump" do
    dir = Tmp.dir!("crash-dump")
    dump = Path.join(dir, "erl_crash.dump")
    secret_file = Path.join(dir, "secret")
    ebin = :code.lib_dir(:micelio_storage, :ebin)

    # The secret is made inside a process that is gone before the dump, so
    # only what the library keeps could hold it.
    script = """
    Application.ensure_all_started(:micelio_storage)
    {_, ref} = spawn_monitor(fn ->
      secret = "dump-secret-" <> Base.encode16(:crypto.strong_rand_bytes(12))
      File.write!(#{inspect(secret_file)}, secret)
      Application.put_env(:micelio, Micelio.Storage,
        backend: :s3, s3_bucket: "b", s3_region: "us-east-1",
        s3_endpoint: "http://127.0.0.1:1", s3_access_key_id: "id",
        s3_secret_access_key: secret)
      {:ok, _} = Micelio.Storage.presigned_url("k")
      {:ok, _} = Micelio.Storage.presigned_url("k", expires_in: 60)
    end)
    receive do {:DOWN, ^ref, _, _, :normal} -> :ok end
    for p <- Process.list(), do: :erlang.garbage_collect(p)
    :erlang.halt(~c"micelio crash dump test")
    """

    {out, _status} =
      System.cmd(System.find_executable("elixir"), ["-pa", to_string(ebin), "-e", script],
        env: [{"ERL_CRASH_DUMP", dump}],
        stderr_to_stdout: true
      )

    assert File.exists?(dump), out
    s = File.read!(secret_file)
    text = File.read!(dump)
    assert text =~ "micelio crash dump test"

    refute text =~ s
    # Binaries are written base64-encoded: decode every run that may be one.
    decoded =
      for [run] <- Regex.scan(~r/[A-Za-z0-9+\/]{8,}/, text),
          {:ok, bytes} <- [Base.decode64(run, padding: false)],
          do: bytes

    assert Enum.any?(decoded, &(&1 =~ "micelio")), "no binary was decoded"
    refute Enum.any?(decoded, &String.contains?(&1, s))
  end
end
