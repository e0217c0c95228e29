defmodule Micelio.Storage.Test.HostileServer do
  @moduledoc false
  # An HTTP/1.1 server on loopback (`:gen_tcp`) that answers each request
  # as a rule says, in front of a real S3 server or alone. It gives the
  # answers real servers give only when something is wrong: lying lengths,
  # 200s carrying errors or HTML, 404s with other codes, skewed clocks,
  # stalls.
  #
  # The rule is a function of the request (a map with `:method`, `:path`,
  # `:query` (a map), `:headers` (lower-case names) and `:body`) returning:
  #   :pass                               - sent on to the upstream server,
  #                                         its answer relayed;
  #   {:reply, status, headers, body}     - a whole answer;
  #   {:lie, status, headers, length, body} - `content-length: length`,
  #                                         then only `body`, then close;
  #   {:stall, ms}                        - read, say nothing for `ms`, close;
  #   {:raw, iodata}                      - these bytes, then close;
  #   :drop                               - read, close without a word;
  #   {:truncate, n}                      - sent on, only the first `n`
  #                                         bytes of the answer relayed;
  #   {:slow, ms}                         - sent on after `ms`.
  # Clients set `s3_pool_size: 0`, so every request comes on its own
  # connection and meets the rule. Requests are recorded for assertions.
  use GenServer

  @doc "Starts it; `upstream` is the port of the server `:pass` goes to."
  def start!(rule, upstream \\ nil) do
    {:ok, pid} = GenServer.start(__MODULE__, {rule, upstream, self()})
    pid
  end

  def port(server), do: GenServer.call(server, :port)
  def endpoint(server), do: "http://127.0.0.1:#{port(server)}"
  def set_rule(server, rule), do: GenServer.call(server, {:rule, rule})

  @doc "The requests seen so far, oldest first, as `{method, path, query}`."
  def requests(server), do: GenServer.call(server, :requests)

  def stop(server), do: GenServer.stop(server)

  @doc "An S3 `<Error>` document."
  def error_xml(code, message \\ "hostile"),
    do: "<?xml version=\"1.0\"?><Error><Code>#{code}</Code><Message>#{message}</Message></Error>"

  @doc "An HTTP date `seconds` away from now."
  def http_date(offset_seconds) do
    DateTime.utc_now()
    |> DateTime.add(offset_seconds, :second)
    |> Calendar.strftime("%a, %d %b %Y %H:%M:%S GMT")
  end

  @impl true
  def init({rule, upstream, owner}) do
    {:ok, listen} =
      :gen_tcp.listen(0, [
        :binary,
        active: false,
        reuseaddr: true,
        ip: {127, 0, 0, 1},
        backlog: 256
      ])

    {:ok, port} = :inet.port(listen)
    Process.monitor(owner)
    me = self()
    spawn_link(fn -> accept_loop(listen, me) end)
    {:ok, %{listen: listen, port: port, rule: rule, upstream: upstream, seen: []}}
  end

  @impl true
  def handle_call(:port, _from, s), do: {:reply, s.port, s}
  def handle_call({:rule, rule}, _from, s), do: {:reply, :ok, %{s | rule: rule}}
  def handle_call(:requests, _from, s), do: {:reply, Enum.reverse(s.seen), s}

  def handle_call({:seen, req}, _from, s),
    do: {:reply, {s.rule, s.upstream}, %{s | seen: [{req.method, req.path, req.query} | s.seen]}}

  @impl true
  def handle_info({:DOWN, _, _, _, _}, s), do: {:stop, :normal, s}
  def handle_info(_, s), do: {:noreply, s}

  @impl true
  def terminate(_, s), do: :gen_tcp.close(s.listen)

  defp accept_loop(listen, server) do
    case :gen_tcp.accept(listen) do
      {:ok, client} ->
        pid = spawn(fn -> serve(client, server) end)
        :gen_tcp.controlling_process(client, pid)
        send(pid, :go)
        accept_loop(listen, server)

      {:error, _} ->
        :ok
    end
  end

  defp serve(client, server) do
    receive do
      :go -> :ok
    end

    case read_request(client, "") do
      {:ok, raw, req} ->
        {rule, upstream} = GenServer.call(server, {:seen, req})
        act(rule.(req), client, raw, upstream)

      :closed ->
        :gen_tcp.close(client)
    end
  catch
    :exit, _ -> :gen_tcp.close(client)
  end

  defp act(:pass, client, raw, upstream) do
    {:ok, up} = :gen_tcp.connect({127, 0, 0, 1}, upstream, [:binary, active: false])
    :ok = :gen_tcp.send(up, raw)
    back = spawn(fn -> pipe(up, client) end)
    :gen_tcp.controlling_process(up, back)
    pipe(client, up)
  end

  defp act({:reply, status, headers, body}, client, _raw, _up),
    do: answer(client, status, headers, byte_size(body), body)

  defp act({:lie, status, headers, length, body}, client, _raw, _up),
    do: answer(client, status, headers, length, body)

  defp act({:stall, ms}, client, _raw, _up) do
    Process.sleep(ms)
    :gen_tcp.close(client)
  end

  defp act(:drop, client, _raw, _up), do: :gen_tcp.close(client)

  defp act({:slow, ms}, client, raw, upstream) do
    Process.sleep(ms)
    act(:pass, client, raw, upstream)
  end

  defp act({:truncate, n}, client, raw, upstream) do
    {:ok, up} = :gen_tcp.connect({127, 0, 0, 1}, upstream, [:binary, active: false])
    :ok = :gen_tcp.send(up, raw)
    relay_at_most(up, client, n)
  end

  defp act({:raw, bytes}, client, _raw, _up) do
    :gen_tcp.send(client, bytes)
    :gen_tcp.close(client)
  end

  defp answer(client, status, headers, length, body) do
    head =
      ["HTTP/1.1 #{status} Hostile\r\n", "content-length: #{length}\r\n", "connection: close\r\n"] ++
        for({k, v} <- headers, do: "#{k}: #{v}\r\n") ++ ["\r\n"]

    :gen_tcp.send(client, [head, body])
    # Let the client read what was sent before the close.
    Process.sleep(20)
    :gen_tcp.close(client)
  end

  defp relay_at_most(from, to, left) do
    case :gen_tcp.recv(from, 0, 10_000) do
      {:ok, data} when byte_size(data) < left ->
        :gen_tcp.send(to, data)
        relay_at_most(from, to, left - byte_size(data))

      {:ok, data} ->
        :gen_tcp.send(to, binary_part(data, 0, left))
        :gen_tcp.close(to)
        :gen_tcp.close(from)

      {:error, _} ->
        :gen_tcp.close(to)
        :gen_tcp.close(from)
    end
  end

  defp pipe(from, to) do
    case :gen_tcp.recv(from, 0) do
      {:ok, data} ->
        :gen_tcp.send(to, data)
        pipe(from, to)

      {:error, _} ->
        :gen_tcp.close(to)
        :gen_tcp.close(from)
    end
  end

  # One whole request: its raw bytes (to send on) and its parts.
  defp read_request(socket, acc) do
    case :binary.split(acc, "\r\n\r\n") do
      [head, rest] ->
        [line | header_lines] = String.split(head, "\r\n")
        [method, target | _] = String.split(line, " ")

        headers =
          for l <- header_lines, [k, v] <- [String.split(l, ":", parts: 2)], into: %{} do
            {String.downcase(k), String.trim(v)}
          end

        length = String.to_integer(Map.get(headers, "content-length", "0"))

        with {:ok, body} <- read_body(socket, rest, length) do
          {path, query} =
            case String.split(target, "?", parts: 2) do
              [p] -> {p, %{}}
              [p, q] -> {p, URI.decode_query(q)}
            end

          req = %{method: method, path: path, query: query, headers: headers, body: body}
          {:ok, head <> "\r\n\r\n" <> body, req}
        end

      [_] ->
        case :gen_tcp.recv(socket, 0, 10_000) do
          {:ok, data} -> read_request(socket, acc <> data)
          {:error, _} -> :closed
        end
    end
  end

  defp read_body(_socket, have, want) when byte_size(have) >= want, do: {:ok, have}

  defp read_body(socket, have, want) do
    case :gen_tcp.recv(socket, 0, 10_000) do
      {:ok, data} -> read_body(socket, have <> data, want)
      {:error, _} -> :closed
    end
  end
end
