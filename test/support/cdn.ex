defmodule Micelio.Storage.Test.Cdn do
  @moduledoc false
  # A real HTTP server, OTP's :inets httpd, playing the CDN on loopback. This
  # module is its request handler: it serves files from a document root
  # (percent-decoding the path, with an ETag), and can be switched to answer
  # 500 or to hang. It counts the requests it gets.
  require Record
  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  @modes %{serve: 0, error: 1, hang: 2}

  def start!(mode \\ :serve) do
    {pid, port, root} = Micelio.Storage.Test.Httpd.start!(__MODULE__, "cdn")
    counters = :counters.new(2, [])
    :persistent_term.put({__MODULE__, port}, counters)
    cdn = %{pid: pid, port: port, root: root, url: "http://127.0.0.1:#{port}", counters: counters}
    set_mode(cdn, mode)
    cdn
  end

  def stop(cdn), do: :inets.stop(:httpd, cdn.pid)

  def set_mode(cdn, mode), do: :counters.put(cdn.counters, 2, Map.fetch!(@modes, mode))

  def requests(cdn), do: :counters.get(cdn.counters, 1)

  @doc "Puts a file the CDN will serve for `key`."
  def publish(cdn, key, content) do
    path = Path.join(cdn.root, key)
    File.mkdir_p!(Path.dirname(path))
    File.write!(path, content)
  end

  # The httpd module callback.
  def unquote(:do)(data) do
    port = :httpd_util.lookup(mod(data, :config_db), :port)
    counters = :persistent_term.get({__MODULE__, port})
    :counters.add(counters, 1, 1)

    case :counters.get(counters, 2) do
      0 -> serve(data)
      1 -> {:break, [response: {500, ~c"CDN failure"}]}
      2 -> Process.sleep(60_000) && {:break, [response: {500, ~c"too late"}]}
    end
  end

  defp serve(data) do
    root = :httpd_util.lookup(mod(data, :config_db), :document_root) |> to_string()
    rel = mod(data, :request_uri) |> to_string() |> URI.decode() |> String.trim_leading("/")
    path = Path.expand(rel, root)

    with true <- String.starts_with?(path, root <> "/"),
         {:ok, body} <- File.read(path) do
      etag = :crypto.hash(:sha256, body) |> binary_part(0, 8) |> Base.encode16(case: :lower)

      head = [
        code: 200,
        content_length: to_charlist(byte_size(body)),
        content_type: ~c"application/octet-stream",
        etag: to_charlist(~s("cdn-#{etag}"))
      ]

      body = if mod(data, :method) == ~c"HEAD", do: [], else: body
      {:break, [response: {:response, head, body}]}
    else
      _ -> {:break, [response: {404, ~c"not found"}]}
    end
  end
end
