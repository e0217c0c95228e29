defmodule Micelio.Storage.Test.Seaweed do
  @moduledoc false
  # Starts a real SeaweedFS (`weed mini`) on loopback for the S3 tests, with an
  # identity so it verifies SigV4 signatures, and creates the test bucket.
  # Started once per `mix test` run, stopped when the suite ends.
  use GenServer

  @access_key "micelio-test-access"
  @secret_key "micelio-test-secret-5b1f0c2e9d"
  @bucket "micelio-test"
  @s3_port 8333

  def access_key, do: @access_key
  def secret_key, do: @secret_key
  def bucket, do: @bucket
  def endpoint, do: "http://127.0.0.1:#{@s3_port}"
  def port, do: @s3_port

  @doc """
  What SeaweedFS lacks, as the conformance suite's `gaps:` (every suite
  whose store ends on SeaweedFS uses it).
  """
  def gaps do
    %{
      "exactly one copy if_absent wins a race" =>
        "SeaweedFS checks If-None-Match on CopyObject and CompleteMultipartUpload " <>
          "without a lock (on PutObject it holds one): racing copies all pass"
    }
  end

  @doc "The keys of the multipart uploads in progress under `opts`'s prefix."
  def uploads_in_progress(opts) do
    {:ok, uploads} = Micelio.Storage.S3.incomplete_uploads(opts)
    Enum.map(uploads, & &1.key)
  end

  @doc "Storage options for an empty area of the test bucket."
  def opts(extra \\ []) do
    [
      backend: :s3,
      s3_bucket: @bucket,
      s3_endpoint: endpoint(),
      s3_region: "us-east-1",
      s3_access_key_id: @access_key,
      s3_secret_access_key: @secret_key,
      s3_session_token: nil,
      s3_prefix: "t#{run_id()}-#{System.unique_integer([:positive])}/"
    ]
    |> Keyword.merge(extra)
  end

  # Unique integers restart with each VM; a random run id keeps areas apart
  # even when the server outlives a run.
  defp run_id do
    case :persistent_term.get({__MODULE__, :run_id}, nil) do
      nil ->
        id = Base.encode16(:crypto.strong_rand_bytes(4), case: :lower)
        :persistent_term.put({__MODULE__, :run_id}, id)
        id

      id ->
        id
    end
  end

  def ensure_started do
    case GenServer.start(__MODULE__, nil, name: __MODULE__) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end

    GenServer.call(__MODULE__, :ensure_started, 120_000)
  end

  @impl true
  def init(nil), do: {:ok, %{os_pid: nil}}

  @impl true
  def handle_call(:ensure_started, _from, %{os_pid: pid} = state) when is_integer(pid),
    do: {:reply, :ok, state}

  def handle_call(:ensure_started, _from, state) do
    sweep_stale_dirs()
    dir = Path.join(System.tmp_dir!(), "micelio_seaweed_#{System.unique_integer([:positive])}")
    File.mkdir_p!(Path.join(dir, "data"))
    # One launcher for the Rust and the Elixir suites (bin/seaweed); its
    # watchdog stops the server when this VM exits, even by kill -9.
    launcher = Path.expand("../../bin/seaweed", __DIR__)
    env = [{"MICELIO_WEED_BIN", weed_bin()}]

    {out, 0} =
      System.cmd(
        launcher,
        [dir, "#{@s3_port}", @access_key, @secret_key, System.pid()],
        env: env,
        stderr_to_stdout: true
      )

    os_pid = out |> String.trim() |> String.split("\n") |> List.last() |> String.to_integer()
    log = Path.join(dir, "weed.log")

    # Benches write gigabytes: the data goes with the server.
    System.at_exit(fn _ ->
      stop_os_pid(os_pid)
      File.rm_rf(dir)
    end)

    :ok = wait_ready(60, log)
    :ok = create_bucket()
    {:reply, :ok, %{state | os_pid: os_pid}}
  end

  @impl true
  def handle_info(_msg, state), do: {:noreply, state}

  defp weed_bin do
    System.get_env("MICELIO_WEED_BIN") ||
      Enum.find(
        [Path.expand("_build/seaweedfs-venv/bin/weed"), System.find_executable("weed")],
        &(&1 && File.exists?(&1))
      ) ||
      raise "SeaweedFS not found: run bin/test (it installs it) or set MICELIO_WEED_BIN"
  end

  # Data dirs of servers that are gone (a run killed before its exit
  # hook): their process no longer exists.
  defp sweep_stale_dirs do
    for dir <- Path.wildcard(Path.join(System.tmp_dir!(), "micelio_seaweed_*")),
        pid = File.read(Path.join(dir, "pid")),
        match?({:ok, _}, pid) and not alive?(elem(pid, 1)) do
      File.rm_rf(dir)
    end
  end

  defp alive?(os_pid) do
    match?({_, 0}, System.cmd("kill", ["-0", String.trim(os_pid)], stderr_to_stdout: true))
  end

  defp stop_os_pid(os_pid) do
    System.cmd("kill", ["-TERM", to_string(os_pid)], stderr_to_stdout: true)

    Enum.reduce_while(1..100, nil, fn _, _ ->
      case System.cmd("kill", ["-0", to_string(os_pid)], stderr_to_stdout: true) do
        {_, 0} -> Process.sleep(100) && {:cont, nil}
        _ -> {:halt, :ok}
      end
    end)

    System.cmd("kill", ["-KILL", to_string(os_pid)], stderr_to_stdout: true)
  end

  defp wait_ready(0, log), do: raise("SeaweedFS did not start:\n" <> File.read!(log))

  defp wait_ready(tries, log) do
    case signed_request(:get, "/", "") do
      {:ok, {{_, 200, _}, _, _}} -> :ok
      _ -> Process.sleep(500) && wait_ready(tries - 1, log)
    end
  end

  defp create_bucket do
    case signed_request(:put, "/#{@bucket}", "") do
      {:ok, {{_, code, _}, _, _}} when code in [200, 409] -> :ok
      other -> raise "cannot create the test bucket: #{inspect(other)}"
    end
  end

  @doc "A request signed with our public signer, sent by plain :httpc."
  def signed_request(method, path, body) do
    url = endpoint() <> path

    {:ok, headers} =
      Micelio.Storage.S3.sign_headers(method, url, [],
        body: body,
        s3_access_key_id: @access_key,
        s3_secret_access_key: @secret_key,
        s3_session_token: nil,
        s3_region: "us-east-1"
      )

    headers = for {k, v} <- headers, do: {to_charlist(k), to_charlist(v)}

    request =
      if method in [:put, :post],
        do: {to_charlist(url), headers, ~c"application/octet-stream", body},
        else: {to_charlist(url), headers}

    :httpc.request(method, request, [timeout: 5_000], body_format: :binary)
  end
end
