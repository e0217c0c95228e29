defmodule Micelio.Storage.Test.S3rver do
  @moduledoc false
  # s3rver (npm), a third S3 implementation none of us wrote, started on
  # loopback for the suite under a shell that stops it when the BEAM closes
  # the port. It checks signatures against its fixed credentials.

  use Agent

  @bucket "micelio-s3rver"

  def ensure_started do
    case Process.whereis(__MODULE__) do
      nil -> {:ok, _} = Agent.start(&start/0, name: __MODULE__)
      _ -> :ok
    end

    endpoint()
  end

  def endpoint, do: Agent.get(__MODULE__, & &1.endpoint)

  @doc "Storage options for an empty area of the s3rver bucket."
  def opts(extra \\ []) do
    [
      backend: :s3,
      s3_bucket: @bucket,
      s3_endpoint: endpoint(),
      s3_region: "us-east-1",
      s3_access_key_id: "S3RVER",
      s3_secret_access_key: "S3RVER",
      s3_session_token: nil,
      s3_prefix: "r#{System.unique_integer([:positive])}/"
    ]
    |> Keyword.merge(extra)
  end

  defp start do
    bin =
      System.get_env("MICELIO_S3RVER_BIN") ||
        Path.expand("../../_build/s3rver/node_modules/.bin/s3rver", __DIR__)

    File.exists?(bin) ||
      raise "s3rver not found at #{bin}: bin/test installs it (npm install s3rver)"

    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    dir = Micelio.Storage.Test.Tmp.dir!("s3rver")

    script =
      "#{bin} -d #{dir} -a 127.0.0.1 -p #{port} --silent --no-vhost-buckets " <>
        "--configure-bucket #{@bucket} >/dev/null 2>&1 & pid=$!; read _; kill $pid"

    os_port = Port.open({:spawn_executable, "/bin/sh"}, [:binary, args: ["-c", script]])
    endpoint = "http://127.0.0.1:#{port}"
    wait_ready(endpoint, 100)
    %{endpoint: endpoint, port: os_port}
  end

  defp wait_ready(_endpoint, 0), do: raise("s3rver did not start")

  defp wait_ready(endpoint, n) do
    case :httpc.request(:get, {String.to_charlist(endpoint <> "/"), []}, [timeout: 1000], []) do
      {:ok, _} ->
        :ok

      _ ->
        Process.sleep(100)
        wait_ready(endpoint, n - 1)
    end
  end
end
