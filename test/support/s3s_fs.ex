defmodule Micelio.Storage.Test.S3sFs do
  @moduledoc false
  # s3s-fs (crates.io, `cargo install s3s-fs --features binary`), a fourth
  # S3 implementation none of us wrote: the s3s crate's S3 front over a
  # plain directory. Started on loopback for the suite under LoopbackServer,
  # so no server outlives the test run. It checks signatures against the
  # credentials it is started with.

  alias Micelio.Storage.Test.LoopbackServer

  @bucket "micelio-s3s"
  @access_key "s3s-access"
  @secret_key "s3s-secret"

  use LoopbackServer,
    bucket: @bucket,
    access_key: @access_key,
    secret_key: @secret_key,
    prefix: "f"

  @doc """
  The multipart uploads in progress: s3s-fs has no ListMultipartUploads,
  so they are read from its disk (a `.upload_id-<id>.part-<n>` file per
  part, removed by AbortMultipartUpload and CompleteMultipartUpload).
  """
  def uploads_in_progress(_opts) do
    root = field(:root)

    root
    |> File.ls!()
    |> Enum.flat_map(fn name ->
      case Regex.run(~r/^\.upload_id-(.+)\.part-\d+$/, name) do
        [_, id] -> [id]
        nil -> []
      end
    end)
    |> Enum.uniq()
  end

  defp start do
    bin =
      System.get_env("MICELIO_S3S_BIN") ||
        Path.expand("../../_build/s3s-fs/bin/s3s-fs", __DIR__)

    File.exists?(bin) ||
      raise "s3s-fs not found at #{bin}: bin/test installs it " <>
              "(cargo install s3s-fs --features binary)"

    port = LoopbackServer.free_port()
    root = Micelio.Storage.Test.Tmp.dir!("s3s-fs")
    # A bucket is a directory of the root.
    File.mkdir_p!(Path.join(root, @bucket))

    command =
      "#{bin} --host 127.0.0.1 --port #{port} --access-key #{@access_key} " <>
        "--secret-key #{@secret_key} #{root}"

    os_port = LoopbackServer.start!(command, port, "s3s-fs")
    %{endpoint: "http://127.0.0.1:#{port}", tcp_port: port, port: os_port, root: root}
  end
end
