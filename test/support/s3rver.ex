defmodule Micelio.Storage.Test.S3rver do
  @moduledoc false
  # s3rver (npm), a third S3 implementation none of us wrote, started on
  # loopback for the suite under a shell that stops it when the BEAM closes
  # the port. It checks signatures against its fixed credentials.

  use Agent

  alias Micelio.Storage.Test.LoopbackServer

  @bucket "micelio-s3rver"

  def ensure_started do
    case Process.whereis(__MODULE__) do
      nil -> {:ok, _} = Agent.start(&start/0, name: __MODULE__)
      _ -> :ok
    end

    endpoint()
  end

  def endpoint, do: Agent.get(__MODULE__, & &1.endpoint)

  @doc "Its loopback port (for a proxy in front of it)."
  def port, do: Agent.get(__MODULE__, & &1.tcp_port)

  @doc """
  The multipart uploads in progress: s3rver has no ListMultipartUploads,
  so they are read from its disk (a directory per upload under
  `<bucket>/._S3rver_uploads`).
  """
  def uploads_in_progress(_opts) do
    uploads = Path.join([Agent.get(__MODULE__, & &1.dir), @bucket, "._S3rver_uploads"])

    case File.ls(uploads) do
      {:ok, ids} -> Enum.filter(ids, &(File.ls!(Path.join(uploads, &1)) != []))
      {:error, :enoent} -> []
    end
  end

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

    port = LoopbackServer.free_port()
    dir = Micelio.Storage.Test.Tmp.dir!("s3rver")

    command =
      "#{bin} -d #{dir} -a 127.0.0.1 -p #{port} --silent --no-vhost-buckets " <>
        "--configure-bucket #{@bucket}"

    os_port = LoopbackServer.start!(command, port, "s3rver")
    endpoint = "http://127.0.0.1:#{port}"
    %{endpoint: endpoint, tcp_port: port, port: os_port, dir: dir}
  end
end
