defmodule Micelio.Storage.Test.S3rver do
  @moduledoc false
  # s3rver (npm), a third S3 implementation none of us wrote, started on
  # loopback for the suite under a shell that stops it when the BEAM closes
  # the port. It checks signatures against its fixed credentials.

  alias Micelio.Storage.Test.LoopbackServer

  @bucket "micelio-s3rver"

  use LoopbackServer, bucket: @bucket, access_key: "S3RVER", secret_key: "S3RVER", prefix: "r"

  @doc """
  The multipart uploads in progress under `opts`'s prefix: s3rver has no
  ListMultipartUploads, so they are read from its disk (a directory per
  upload under `<bucket>/._S3rver_uploads`, holding its key in `key`).
  The prefix matters: uploads other tests left (s3rver cannot abort them,
  the doctor's probes among them) are not this test's.
  """
  def uploads_in_progress(opts) do
    uploads = Path.join([field(:dir), @bucket, "._S3rver_uploads"])
    prefix = Keyword.get(opts, :s3_prefix, "")

    case File.ls(uploads) do
      {:ok, ids} -> Enum.filter(ids, &under?(Path.join(uploads, &1), prefix))
      {:error, :enoent} -> []
    end
  end

  defp under?(upload, prefix) do
    case File.read(Path.join(upload, "key")) do
      {:ok, key} -> String.starts_with?(key, prefix) and File.ls!(upload) != []
      {:error, _} -> File.ls!(upload) != []
    end
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
