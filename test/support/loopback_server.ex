defmodule Micelio.Storage.Test.LoopbackServer do
  @moduledoc false
  # Starts an OS process that serves on a free loopback port, under a shell
  # that stops it when the BEAM closes the port (the shell's stdin), so no
  # server outlives the test run; waits until it answers HTTP.

  @doc """
  The common part of an S3 server the suite starts once (moto, s3rver,
  s3s-fs): `ensure_started/0`, `endpoint/0`, `port/0`, `field/1` and
  `opts/1`. The module defines `start/0`, returning a map with at least
  `:endpoint` and `:tcp_port`, kept by an Agent named after the module.

      use Micelio.Storage.Test.LoopbackServer,
        bucket: "micelio-moto", access_key: "a", secret_key: "s", prefix: "m"
  """
  defmacro __using__(opts) do
    quote bind_quoted: [opts: opts] do
      use Agent

      @server_bucket Keyword.fetch!(opts, :bucket)
      @server_access_key Keyword.fetch!(opts, :access_key)
      @server_secret_key Keyword.fetch!(opts, :secret_key)
      @server_prefix Keyword.fetch!(opts, :prefix)

      def bucket, do: @server_bucket

      @doc "Starts it once; returns its endpoint."
      def ensure_started do
        if Process.whereis(__MODULE__) == nil,
          do: {:ok, _} = Agent.start(&start/0, name: __MODULE__)

        endpoint()
      end

      def endpoint, do: field(:endpoint)

      @doc "Its loopback port (for a proxy in front of it)."
      def port, do: field(:tcp_port)

      @doc "A field of the map `start/0` returned."
      def field(name), do: Agent.get(__MODULE__, &Map.fetch!(&1, name))

      @doc "Storage options for an empty area of the bucket."
      def opts(extra \\ []) do
        [
          backend: :s3,
          s3_bucket: @server_bucket,
          s3_endpoint: endpoint(),
          s3_region: "us-east-1",
          s3_access_key_id: @server_access_key,
          s3_secret_access_key: @server_secret_key,
          s3_session_token: nil,
          s3_prefix: "#{@server_prefix}#{System.unique_integer([:positive])}/"
        ]
        |> Keyword.merge(extra)
      end
    end
  end

  @doc "A free port on 127.0.0.1."
  def free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  @doc """
  Runs `command` (a shell command line that serves on `port`) and waits
  for `http://127.0.0.1:<port>/` to answer. Returns the OS port.
  """
  def start!(command, port, name) do
    # The server runs in a session and process group of its own
    # (`setsid`), and the whole group is stopped when the port closes: a
    # server that starts children (ChromeDriver starts Chromium and its
    # renderers) leaves none behind, even when its owner died before it
    # could stop it cleanly.
    script = "setsid #{command} >/dev/null 2>&1 & pid=$!; read _; kill -- -$pid"
    os_port = Port.open({:spawn_executable, "/bin/sh"}, [:binary, args: ["-c", script]])
    {:ok, _} = Application.ensure_all_started(:inets)
    wait_ready("http://127.0.0.1:#{port}/", name, 200)
    os_port
  end

  defp wait_ready(_url, name, 0), do: raise("#{name} did not start")

  defp wait_ready(url, name, n) do
    case :httpc.request(:get, {String.to_charlist(url), []}, [timeout: 1000], []) do
      {:ok, _} ->
        :ok

      _ ->
        Process.sleep(100)
        wait_ready(url, name, n - 1)
    end
  end
end
