defmodule Micelio.Storage.Test.TlsProxy do
  @moduledoc false
  # A TLS front for the S3 server, with a certificate for `localhost` from a
  # private certificate authority made for the test (OTP's
  # `:public_key.pkix_test_data/1`). Bytes are relayed unchanged, so
  # SeaweedFS still checks signatures.

  @doc "Starts it; returns `{port, ca_pem_path}`."
  def start!(upstream_port, dir) do
    san = {:Extension, {2, 5, 29, 17}, false, [{:dNSName, ~c"localhost"}]}

    # RSA signed with SHA-256: rustls refuses SHA-1 signatures, and OTP
    # writes ECDSA signature algorithms with parameters webpki rejects.
    key = {:rsa, 2048, 65537}

    data =
      :public_key.pkix_test_data(%{
        server_chain: %{
          root: [key: key, digest: :sha256],
          intermediates: [],
          peer: [key: key, digest: :sha256, extensions: [san]]
        },
        client_chain: %{
          root: [key: key, digest: :sha256],
          intermediates: [],
          peer: [key: key, digest: :sha256]
        }
      })

    ca_pem =
      :public_key.pem_encode(
        for der <- data.client_config[:cacerts], do: {:Certificate, der, :not_encrypted}
      )

    ca_path = Path.join(dir, "private-ca.pem")
    File.write!(ca_path, ca_pem)
    {:ok, _} = Application.ensure_all_started(:ssl)

    {:ok, listen} =
      :ssl.listen(
        0,
        [cert: data.server_config[:cert], key: data.server_config[:key]] ++
          [
            cacerts: data.server_config[:cacerts],
            active: false,
            mode: :binary,
            reuseaddr: true,
            ip: {127, 0, 0, 1}
          ]
      )

    {:ok, {_, port}} = :ssl.sockname(listen)
    owner = self()
    pid = spawn(fn -> accept(listen, upstream_port, Process.monitor(owner)) end)
    :ok = :ssl.controlling_process(listen, pid)
    {port, ca_path}
  end

  defp accept(listen, upstream, ref) do
    case :ssl.transport_accept(listen, 200) do
      {:ok, tls} ->
        spawn(fn -> serve(tls, upstream) end)
        accept(listen, upstream, ref)

      {:error, :timeout} ->
        receive do
          {:DOWN, ^ref, _, _, _} -> :ssl.close(listen)
        after
          0 -> accept(listen, upstream, ref)
        end

      {:error, _} ->
        :ok
    end
  end

  defp serve(tls, upstream) do
    with {:ok, tls} <- :ssl.handshake(tls, 5_000),
         {:ok, tcp} <-
           :gen_tcp.connect({127, 0, 0, 1}, upstream, [:binary, active: false], 5_000) do
      me = self()
      back = spawn_link(fn -> relay_back(tcp, tls, me) end)
      :gen_tcp.controlling_process(tcp, back)
      relay(tls, tcp)
    end
  end

  defp relay(tls, tcp) do
    case :ssl.recv(tls, 0) do
      {:ok, data} ->
        :gen_tcp.send(tcp, data)
        relay(tls, tcp)

      {:error, _} ->
        :gen_tcp.close(tcp)
    end
  end

  defp relay_back(tcp, tls, _front) do
    case :gen_tcp.recv(tcp, 0) do
      {:ok, data} ->
        :ssl.send(tls, data)
        relay_back(tcp, tls, nil)

      {:error, _} ->
        :ssl.close(tls)
    end
  end
end
