defmodule Micelio.Storage.Test.Httpd do
  @moduledoc false
  # Starts OTP's :inets httpd on a free loopback port with `handler` as its
  # only module (an httpd callback module with `do/1`). Shared by the test
  # servers that play the CDN and the AWS credential endpoints.

  @doc "Returns `{pid, port, document_root}`."
  def start!(handler, name) do
    {:ok, _} = Application.ensure_all_started(:inets)
    root = Micelio.Storage.Test.Tmp.dir!(name)

    {:ok, pid} =
      :inets.start(:httpd,
        port: 0,
        bind_address: {127, 0, 0, 1},
        server_name: to_charlist(name),
        server_root: to_charlist(root),
        document_root: to_charlist(root),
        modules: [handler]
      )

    {pid, :httpd.info(pid)[:port], root}
  end
end
