defmodule Micelio.Storage.PlugTest do
  # Micelio.Storage.Plug behind a real Bandit server on loopback, driven by
  # :httpc and curl, over local and S3 (SeaweedFS, and a hostile proxy in
  # front of it that stops mid-body).
  use ExUnit.Case, async: false

  import Bitwise

  alias Micelio.Storage.Test.{HostileServer, Seaweed, Tmp}

  @moduletag :s3
  @moduletag timeout: 300_000

  defmodule Router do
    # /<route>/<path...>: the route's options, from the test's table.
    @behaviour Plug
    def init(table), do: table

    def call(%Plug.Conn{path_info: [route | rest]} = conn, table) do
      opts = :persistent_term.get({table, route})
      conn = %{conn | path_info: rest, script_name: conn.script_name ++ [route]}
      Micelio.Storage.Plug.call(conn, Micelio.Storage.Plug.init(opts))
    end
  end

  setup_all do
    :ok = Seaweed.ensure_started()
    {:ok, _} = Application.ensure_all_started(:inets)
    {:ok, _} = Application.ensure_all_started(:bandit)
    table = make_ref()

    {:ok, server} =
      Bandit.start_link(plug: {Router, table}, port: 0, ip: {127, 0, 0, 1}, startup_log: false)

    {:ok, {_ip, port}} = ThousandIsland.listener_info(server)
    on_exit(fn -> Process.exit(server, :shutdown) end)
    %{table: table, base: "http://127.0.0.1:#{port}"}
  end

  setup ctx do
    local = [backend: :local, local_path: Tmp.dir!("plug")]
    route(ctx, "local", store: local, cache_control: "private, max-age=60")
    %{local: local}
  end

  defp route(ctx, name, opts), do: :persistent_term.put({ctx.table, name}, opts)

  defp request(method, url, headers \\ []) do
    headers = for {k, v} <- headers, do: {String.to_charlist(k), String.to_charlist(v)}

    {:ok, {{_, status, _}, resp_headers, body}} =
      :httpc.request(method, {String.to_charlist(url), headers}, [autoredirect: false],
        body_format: :binary
      )

    {status, Map.new(resp_headers, fn {k, v} -> {List.to_string(k), List.to_string(v)} end), body}
  end

  describe "over the local backend" do
    test "200 with the object's headers, HEAD with the length and no body", ctx do
      {:ok, _} =
        Micelio.Storage.put(
          "docs/a.txt",
          "hello world",
          ctx.local ++ [content_type: "text/plain"]
        )

      {200, h, "hello world"} = request(:get, ctx.base <> "/local/docs/a.txt")
      {:ok, meta} = Micelio.Storage.head("docs/a.txt", ctx.local)
      assert h["etag"] == ~s("#{meta.etag}")
      assert h["content-type"] == "text/plain"
      assert h["accept-ranges"] == "bytes"
      assert h["cache-control"] == "private, max-age=60"
      assert h["content-length"] == "11"
      assert h["content-disposition"] =~ ~s(inline; filename="a.txt")
      assert {:ok, _} = Micelio.Storage.Plug.Responses.parse_date(h["last-modified"])

      {200, h, ""} = request(:head, ctx.base <> "/local/docs/a.txt")
      assert h["content-length"] == "11"
      assert h["etag"] == ~s("#{meta.etag}")
    end

    test "304 for If-None-Match and If-Modified-Since", ctx do
      Micelio.Storage.put!("docs/a.txt", "hello", ctx.local)
      {200, h, _} = request(:get, ctx.base <> "/local/docs/a.txt")

      {304, h304, ""} =
        request(:get, ctx.base <> "/local/docs/a.txt", [{"if-none-match", h["etag"]}])

      assert h304["etag"] == h["etag"]

      {304, _, ""} =
        request(:get, ctx.base <> "/local/docs/a.txt", [
          {"if-none-match", ~s(W/"x", #{h["etag"]})}
        ])

      {200, _, "hello"} =
        request(:get, ctx.base <> "/local/docs/a.txt", [{"if-none-match", ~s("other")}])

      {304, _, ""} =
        request(:get, ctx.base <> "/local/docs/a.txt", [{"if-modified-since", h["last-modified"]}])

      earlier = Micelio.Storage.Test.HostileServer.http_date(-3600)

      {200, _, "hello"} =
        request(:get, ctx.base <> "/local/docs/a.txt", [{"if-modified-since", earlier}])
    end

    test "206 for one range, 416 beyond the end, the whole object for several", ctx do
      Micelio.Storage.put!("r.bin", "0123456789", ctx.local)
      url = ctx.base <> "/local/r.bin"

      {206, h, "234"} = request(:get, url, [{"range", "bytes=2-4"}])
      assert h["content-range"] == "bytes 2-4/10"
      assert h["content-length"] == "3"
      {206, _, "789"} = request(:get, url, [{"range", "bytes=-3"}])
      {206, h, "89"} = request(:get, url, [{"range", "bytes=8-"}])
      assert h["content-range"] == "bytes 8-9/10"
      {206, _, "89"} = request(:get, url, [{"range", "bytes=8-100"}])

      {416, h, ""} = request(:get, url, [{"range", "bytes=10-12"}])
      assert h["content-range"] == "bytes */10"

      {200, _, "0123456789"} = request(:get, url, [{"range", "bytes=0-1,4-5"}])
      {200, _, "0123456789"} = request(:get, url, [{"range", "lines=1-2"}])
      {206, h, ""} = request(:head, url, [{"range", "bytes=2-4"}])
      assert h["content-length"] == "3"
    end

    test "If-Range with a stale ETag gets the whole new object", ctx do
      Micelio.Storage.put!("v.txt", "version one", ctx.local)
      url = ctx.base <> "/local/v.txt"
      {200, h, _} = request(:get, url)
      {206, _, "ver"} = request(:get, url, [{"range", "bytes=0-2"}, {"if-range", h["etag"]}])

      Micelio.Storage.put!("v.txt", "version two!", ctx.local)

      {200, _, "version two!"} =
        request(:get, url, [{"range", "bytes=0-2"}, {"if-range", h["etag"]}])
    end

    test "Content-Disposition carries any name (RFC 6266 filename*)", ctx do
      route(ctx, "attach", store: ctx.local, disposition: :attachment)
      key = "reports/Résumé 2026 – “final”.pdf"
      Micelio.Storage.put!(key, "%PDF", ctx.local)

      {:ok, {{_, 200, _}, headers, _}} =
        :httpc.request(
          :get,
          {String.to_charlist(ctx.base <> "/attach/" <> URI.encode(key)), []},
          [],
          body_format: :binary
        )

      disposition = headers |> List.keyfind(~c"content-disposition", 0) |> elem(1)
      disposition = :erlang.list_to_binary(disposition)
      assert disposition =~ ~s(attachment; filename="R)

      assert disposition =~
               "filename*=UTF-8''R%C3%A9sum%C3%A9%202026%20%E2%80%93%20%E2%80%9Cfinal%E2%80%9D.pdf"

      # curl agrees on the name it saves under.
      dir = Tmp.dir!("curl")

      {_, 0} =
        System.cmd("curl", ["-s", "-O", "-J", ctx.base <> "/attach/" <> URI.encode(key)], cd: dir)

      assert File.ls!(dir) != []
    end

    test "404, 400, authorization and content-addressed caching", ctx do
      {404, _, _} = request(:get, ctx.base <> "/local/missing.txt")
      {400, _, _} = request(:get, ctx.base <> "/local/a/%00/b")
      {400, _, _} = request(:get, ctx.base <> "/local/a%2F..%2F..%2Fetc/passwd")

      route(ctx, "private",
        store: ctx.local,
        authorize: fn conn, _key ->
          if Plug.Conn.get_req_header(conn, "authorization") == ["Bearer ok"],
            do: :ok,
            else: {:error, 403}
        end
      )

      Micelio.Storage.put!("s.txt", "secret", ctx.local)
      {403, _, ""} = request(:get, ctx.base <> "/private/s.txt")

      {200, _, "secret"} =
        request(:get, ctx.base <> "/private/s.txt", [{"authorization", "Bearer ok"}])

      {:ok, key} = Micelio.Storage.put_content_addressed("built", ctx.local ++ [prefix: "cas/"])
      {200, h, "built"} = request(:get, ctx.base <> "/local/" <> key)
      assert h["cache-control"] == "public, max-age=31536000, immutable"

      # Other methods pass through (nothing answers them here).
      {:ok, {{_, status, _}, _, _}} =
        :httpc.request(
          :post,
          {String.to_charlist(ctx.base <> "/local/s.txt"), [], ~c"text/plain", "x"},
          [],
          []
        )

      assert status >= 500
    end

    test "the key from a function, under a prefix", ctx do
      Micelio.Storage.put!("users/7/avatar.png", "png", ctx.local)

      route(ctx, "avatar",
        store: ctx.local,
        key: fn conn -> "users/#{hd(conn.path_info)}/avatar.png" end
      )

      {200, h, "png"} = request(:get, ctx.base <> "/avatar/7")
      assert h["content-type"] == "image/png"

      route(ctx, "users", store: ctx.local, prefix: "users/")
      {200, _, "png"} = request(:get, ctx.base <> "/users/7/avatar.png")
    end
  end

  describe "over S3" do
    test "ranges and conditionals stream from SeaweedFS", ctx do
      s3 = Seaweed.opts()
      Micelio.Storage.put!("x/y.json", ~s({"a":1}), s3 ++ [content_type: "application/json"])
      {:ok, meta} = Micelio.Storage.head("x/y.json", s3)
      route(ctx, "s3", store: s3)

      {200, h, ~s({"a":1})} = request(:get, ctx.base <> "/s3/x/y.json")
      assert h["content-type"] == "application/json"
      assert h["etag"] == ~s("#{meta.etag}")
      {206, _, ~s("a")} = request(:get, ctx.base <> "/s3/x/y.json", [{"range", "bytes=1-3"}])
      {304, _, ""} = request(:get, ctx.base <> "/s3/x/y.json", [{"if-none-match", h["etag"]}])
      {404, _, _} = request(:get, ctx.base <> "/s3/x/none.json")
    end

    test ":redirect mode answers 302 to a presigned GET, or to the CDN", ctx do
      s3 = Seaweed.opts()
      Micelio.Storage.put!("d/file.txt", "redirected", s3)
      route(ctx, "redirect", store: s3, mode: :redirect, disposition: :attachment)

      {302, h, _} = request(:get, ctx.base <> "/redirect/d/file.txt")
      location = h["location"]
      assert location =~ "X-Amz-Signature="
      assert location =~ "response-content-disposition="
      # The presigned URL really serves the object.
      {200, h2, "redirected"} = request(:get, location)
      assert h2["content-disposition"] =~ "attachment"

      tiered =
        Keyword.merge(s3,
          backend: :tiered,
          origin_backend: :s3,
          cdn_base_url: "https://cdn.example.com/assets",
          cache_disk_path: Tmp.dir!("plug-cdn")
        )

      route(ctx, "cdn", store: tiered, mode: :redirect)
      {302, h, _} = request(:get, ctx.base <> "/cdn/d/file.txt")
      assert h["location"] =~ "https://cdn.example.com/assets/"
      assert h["location"] =~ "d/file.txt"
    end

    test "a disk-tier hit goes out with sendfile, checked, and its link is removed", ctx do
      cache = Tmp.dir!("plug-disk")

      tiered =
        Keyword.merge(Seaweed.opts(),
          backend: :tiered,
          origin_backend: :s3,
          cache_disk_path: cache,
          cache_memory_max_bytes: 0
        )

      content = :crypto.strong_rand_bytes(300_000)
      Micelio.Storage.put!("cached.bin", content, tiered)
      # The first read fills the disk tier from S3.
      assert {:ok, ^content} = Micelio.Storage.get("cached.bin", tiered)
      route(ctx, "tiered", store: tiered)
      {:ok, before} = Micelio.Storage.stats(tiered)

      {200, _, ^content} = request(:get, ctx.base <> "/tiered/cached.bin")

      {206, _, part} =
        request(:get, ctx.base <> "/tiered/cached.bin", [{"range", "bytes=1000-1999"}])

      assert part == binary_part(content, 1000, 1000)

      {:ok, later} = Micelio.Storage.stats(tiered)
      assert later.disk.hits >= before.disk.hits + 2
      # The server removes each link once the body is sent, which may be
      # just after the client has read it.
      links = fn -> Path.wildcard(Path.join(cache, ".sendfile/*"), match_dot: true) end

      assert Enum.find_value(1..100, fn _ ->
               links.() == [] || (Process.sleep(20) && false)
             end),
             "links left: #{inspect(links.())}"
    end

    test "S3 stopping mid-body aborts the response: curl sees a broken transfer", ctx do
      size = 24 * 1024 * 1024
      s3 = Seaweed.opts()
      Micelio.Storage.put!("big.bin", :binary.copy("0123456789abcdef", div(size, 16)), s3)

      gets = :atomics.new(1, [])

      rule = fn
        %{method: "GET"} ->
          # The first GET is cut after 3 MB; every later one (the resumes)
          # finds the server gone.
          if :atomics.add_get(gets, 1, 1) == 1, do: {:truncate, 3_000_000}, else: :drop

        _ ->
          :pass
      end

      proxy = HostileServer.start!(rule, 8333)

      route(ctx, "hostile",
        store:
          Keyword.merge(s3,
            s3_endpoint: HostileServer.endpoint(proxy),
            s3_pool_size: 0,
            s3_max_retries: 1
          )
      )

      {out, status} =
        System.cmd(
          "curl",
          [
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            ctx.base <> "/hostile/big.bin"
          ],
          stderr_to_stdout: true
        )

      assert status != 0, "curl took a cut response for a whole one: #{out}"
      assert out =~ ~r/curl: \((18|56)\)/
      [downloaded] = Regex.run(~r/(\d+)$/, String.trim(out), capture: :all_but_first)
      assert String.to_integer(downloaded) < size
      HostileServer.stop(proxy)
    end

    @tag timeout: 600_000
    test "a 1 GiB object streams from S3 in bounded memory", ctx do
      s3 = Seaweed.opts()
      size = 1 <<< 30
      source = Path.join(Tmp.dir!("plug-gib"), "gib.bin")
      {_, 0} = System.cmd("truncate", ["-s", Integer.to_string(size), source])
      Micelio.Storage.put_file!("gib.bin", source, s3)
      File.rm!(source)
      route(ctx, "gib", store: s3)

      :erlang.garbage_collect()
      before_beam = :erlang.memory(:total)
      sampler = start_sampler()

      {out, 0} =
        System.cmd("curl", [
          "-s",
          "-S",
          "-o",
          "/dev/null",
          "-w",
          "%{size_download} %{http_code}",
          ctx.base <> "/gib/gib.bin"
        ])

      {peak_beam, peak_rss} = stop_sampler(sampler)
      assert out == "#{size} 200"
      grown = peak_beam - before_beam

      IO.puts(
        "\n[plug 1 GiB from S3] BEAM memory grew at most #{div(grown, 1 <<< 20)} MiB, " <>
          "peak OS RSS #{div(peak_rss, 1 <<< 20)} MiB"
      )

      assert grown < 128 <<< 20
    end
  end

  defp start_sampler do
    parent = self()

    spawn_link(fn ->
      sample = fn sample, beam, rss ->
        receive do
          :stop -> send(parent, {:peaks, beam, rss})
        after
          5 -> sample.(sample, max(beam, :erlang.memory(:total)), max(rss, os_rss()))
        end
      end

      sample.(sample, 0, 0)
    end)
  end

  defp stop_sampler(pid) do
    send(pid, :stop)

    receive do
      {:peaks, beam, rss} -> {beam, rss}
    end
  end

  defp os_rss do
    case File.read("/proc/self/status") do
      {:ok, status} ->
        [kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, status, capture: :all_but_first)
        String.to_integer(kb) * 1024

      _ ->
        0
    end
  end
end
