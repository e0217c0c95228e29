defmodule Micelio.Storage.Test.Moto do
  @moduledoc false
  # moto's S3 server (`pip install 'moto[server]'`), a second S3
  # implementation none of us wrote, started on loopback for the suite. It
  # runs under a shell that stops it when the BEAM closes the port (the
  # shell's stdin), so no server outlives the test run.

  use Agent

  @bucket "micelio-moto"
  @access_key "moto-access"
  @secret_key "moto-secret"

  def bucket, do: @bucket

  @doc "Starts it once; returns its endpoint."
  def ensure_started do
    case Process.whereis(__MODULE__) do
      nil ->
        {:ok, _} = Agent.start(&start/0, name: __MODULE__)
        endpoint()

      _ ->
        endpoint()
    end
  end

  def endpoint, do: Agent.get(__MODULE__, & &1.endpoint)

  @doc "Storage options for an empty area of the moto bucket."
  def opts(extra \\ []) do
    [
      backend: :s3,
      s3_bucket: @bucket,
      s3_endpoint: endpoint(),
      s3_region: "us-east-1",
      s3_access_key_id: @access_key,
      s3_secret_access_key: @secret_key,
      s3_session_token: nil,
      s3_prefix: "m#{System.unique_integer([:positive])}/"
    ]
    |> Keyword.merge(extra)
  end

  defp start do
    bin =
      System.get_env("MICELIO_MOTO_BIN") ||
        Path.expand("../../_build/moto-venv/bin/moto_server", __DIR__)

    File.exists?(bin) ||
      raise "moto_server not found at #{bin}: bin/test installs it (pip install 'moto[server]')"

    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)

    script = ~s(#{bin} -H 127.0.0.1 -p #{port} >/dev/null 2>&1 & pid=$!; read _; kill $pid)

    os_port = Port.open({:spawn_executable, "/bin/sh"}, [:binary, args: ["-c", script]])

    endpoint = "http://127.0.0.1:#{port}"
    wait_ready(endpoint, 200)
    create_bucket(endpoint)
    %{endpoint: endpoint, port: os_port}
  end

  defp wait_ready(_endpoint, 0), do: raise("moto_server did not start")

  defp wait_ready(endpoint, n) do
    case :httpc.request(:get, {String.to_charlist(endpoint <> "/"), []}, [timeout: 1000], []) do
      {:ok, _} ->
        :ok

      _ ->
        Process.sleep(100)
        wait_ready(endpoint, n - 1)
    end
  end

  defp create_bucket(endpoint) do
    url = "#{endpoint}/#{@bucket}"

    {:ok, headers} =
      Micelio.Storage.S3.sign_headers(:put, url, [],
        body: "",
        s3_access_key_id: @access_key,
        s3_secret_access_key: @secret_key,
        s3_session_token: nil,
        s3_region: "us-east-1"
      )

    headers = for {k, v} <- headers, do: {to_charlist(k), to_charlist(v)}

    {:ok, {{_, code, _}, _, _}} =
      :httpc.request(:put, {to_charlist(url), headers, ~c"application/octet-stream", ""}, [], [])

    code in [200, 409] || raise "cannot create the moto bucket: HTTP #{code}"
  end
end
