defmodule Micelio.Storage.Test.Moto do
  @moduledoc false
  # moto's S3 server (`pip install 'moto[server]'`), a second S3
  # implementation none of us wrote, started on loopback for the suite. It
  # runs under LoopbackServer, so no server outlives the test run.

  alias Micelio.Storage.Test.LoopbackServer

  @bucket "micelio-moto"
  @access_key "moto-access"
  @secret_key "moto-secret"

  use LoopbackServer,
    bucket: @bucket,
    access_key: @access_key,
    secret_key: @secret_key,
    prefix: "m"

  @doc "The keys of the multipart uploads in progress under `opts`'s prefix."
  def uploads_in_progress(opts) do
    {:ok, uploads} = Micelio.Storage.S3.incomplete_uploads(opts)
    Enum.map(uploads, & &1.key)
  end

  defp start do
    bin =
      System.get_env("MICELIO_MOTO_BIN") ||
        Path.expand("../../_build/moto-venv/bin/moto_server", __DIR__)

    File.exists?(bin) ||
      raise "moto_server not found at #{bin}: bin/test installs it (pip install 'moto[server]')"

    port = LoopbackServer.free_port()
    os_port = LoopbackServer.start!("#{bin} -H 127.0.0.1 -p #{port}", port, "moto_server")
    endpoint = "http://127.0.0.1:#{port}"
    create_bucket(endpoint)
    %{endpoint: endpoint, tcp_port: port, port: os_port}
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
