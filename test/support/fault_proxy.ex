defmodule Micelio.Storage.Test.FaultProxy do
  @moduledoc false
  # A TCP proxy in front of the S3 server whose faults the test controls.
  # Each new connection takes the next fault from the queue (`:pass` when
  # empty):
  #   :pass  - relay bytes both ways;
  #   :drop  - read the request, then close without answering (a reset);
  #   :s503  - read the request, answer 503 SlowDown and close.
  # Stores used through it set `s3_pool_size: 0`, so every request opens a
  # new connection and faults apply per request.
  use GenServer

  def start_link(upstream_port) do
    GenServer.start_link(__MODULE__, upstream_port)
  end

  def port(proxy), do: GenServer.call(proxy, :port)
  def inject(proxy, faults), do: GenServer.call(proxy, {:inject, faults})
  def counts(proxy), do: GenServer.call(proxy, :counts)

  @doc """
  From now on, every request whose request line matches `regex` is held
  `ms` before it goes to the server, as on a slow path (it goes on even
  when the client has gone meanwhile, as a request already on the wire
  does). Every request's arrival and every answer's first bytes are
  logged, in order: see `events/1`.
  """
  def delay_matching(proxy, regex, ms), do: GenServer.call(proxy, {:delay_matching, regex, ms})

  @doc "What `delay_matching/3` logged: `{:received | :answered, request line}`, oldest first."
  def events(proxy), do: GenServer.call(proxy, :events)

  @doc "From now on, every request whose request line matches `regex` gets a 500."
  def fail_matching(proxy, regex), do: GenServer.call(proxy, {:fail_matching, regex})

  @impl true
  def init(upstream_port) do
    {:ok, listen} =
      :gen_tcp.listen(0, [
        :binary,
        active: false,
        reuseaddr: true,
        ip: {127, 0, 0, 1},
        backlog: 128
      ])

    {:ok, port} = :inet.port(listen)
    me = self()
    spawn_link(fn -> accept_loop(listen, me) end)
    {:ok, %{listen: listen, port: port, upstream: upstream_port, faults: [], counts: %{}}}
  end

  @impl true
  def handle_call(:port, _from, s), do: {:reply, s.port, s}

  def handle_call({:inject, faults}, _from, s),
    do: {:reply, :ok, %{s | faults: s.faults ++ faults}}

  def handle_call(:counts, _from, s), do: {:reply, s.counts, s}

  def handle_call({:delay_matching, regex, ms}, _from, s),
    do: {:reply, :ok, Map.put(s, :delay_matching, {regex, ms})}

  def handle_call(:events, _from, s), do: {:reply, Enum.reverse(Map.get(s, :events, [])), s}

  def handle_call({:fail_matching, regex}, _from, s),
    do: {:reply, :ok, Map.put(s, :fail_matching, regex)}

  def handle_call(:next_fault, _from, s) do
    {fault, rest} =
      case s.faults do
        [f | rest] -> {f, rest}
        [] -> {default_fault(s), []}
      end

    {:reply, {fault, s.upstream},
     %{s | faults: rest, counts: Map.update(s.counts, fault, 1, &(&1 + 1))}}
  end

  @impl true
  def handle_cast({:event, event}, s),
    do: {:noreply, Map.update(s, :events, [event], &[event | &1])}

  defp default_fault(%{delay_matching: {regex, ms}}), do: {:delay, regex, ms, self()}
  defp default_fault(%{fail_matching: regex}), do: {:inspect, regex}
  defp default_fault(_s), do: :pass

  defp accept_loop(listen, server) do
    case :gen_tcp.accept(listen) do
      {:ok, client} ->
        {fault, upstream} = GenServer.call(server, :next_fault)
        pid = spawn(fn -> handle(client, fault, upstream) end)
        :gen_tcp.controlling_process(client, pid)
        send(pid, :go)
        accept_loop(listen, server)

      {:error, _} ->
        :ok
    end
  end

  defp handle(client, fault, upstream) do
    receive do
      :go -> :ok
    end

    case fault do
      :pass -> relay(client, upstream)
      :drop -> read_request(client) && :gen_tcp.close(client)
      :s503 -> read_request(client) && answer_503(client)
      {:inspect, regex} -> inspect_request(client, regex, upstream)
      {:delay, regex, ms, server} -> delay_request(client, regex, ms, server, upstream)
    end
  end

  # Reads the whole request, logs it, holds it `ms` when its request line
  # matches, then sends it on (whether or not the client is still there)
  # and relays the answer, logging its first bytes.
  defp delay_request(client, regex, ms, server, upstream_port) do
    request = read_all(client)
    [line | _] = String.split(request, "\r\n", parts: 2)
    GenServer.cast(server, {:event, {:received, line}})
    if Regex.match?(regex, line), do: Process.sleep(ms)
    {:ok, up} = :gen_tcp.connect({127, 0, 0, 1}, upstream_port, [:binary, active: false])
    :gen_tcp.send(up, request)

    case :gen_tcp.recv(up, 0, 60_000) do
      {:ok, data} ->
        GenServer.cast(server, {:event, {:answered, line}})
        :gen_tcp.send(client, data)
        back = spawn_link(fn -> pipe(up, client, nil) end)
        :gen_tcp.controlling_process(up, back)
        pipe(client, up, nil)

      {:error, _} ->
        :gen_tcp.close(client)
    end
  end

  # Reads the whole request; answers 500 when its request line matches,
  # else sends it on and relays the answer.
  defp inspect_request(client, regex, upstream_port) do
    request = read_all(client)
    [line | _] = String.split(request, "\r\n", parts: 2)

    if Regex.match?(regex, line) do
      body = "<Error><Code>InternalError</Code><Message>injected</Message></Error>"

      :gen_tcp.send(
        client,
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/xml\r\n" <>
          "content-length: #{byte_size(body)}\r\nconnection: close\r\n\r\n" <> body
      )

      :gen_tcp.close(client)
    else
      {:ok, up} = :gen_tcp.connect({127, 0, 0, 1}, upstream_port, [:binary, active: false])
      :gen_tcp.send(up, request)
      back = spawn_link(fn -> pipe(up, client, nil) end)
      :gen_tcp.controlling_process(up, back)
      pipe(client, up, nil)
    end
  end

  defp read_all(client, acc \\ "") do
    case :binary.split(acc, "\r\n\r\n") do
      [head, rest] ->
        length =
          case Regex.run(~r/content-length:\s*(\d+)/i, head) do
            [_, n] -> String.to_integer(n)
            _ -> 0
          end

        read_rest(client, acc, length - byte_size(rest))

      [_] ->
        case :gen_tcp.recv(client, 0, 10_000) do
          {:ok, data} -> read_all(client, acc <> data)
          _ -> acc
        end
    end
  end

  defp read_rest(_client, acc, n) when n <= 0, do: acc

  defp read_rest(client, acc, n) do
    case :gen_tcp.recv(client, 0, 10_000) do
      {:ok, data} -> read_rest(client, acc <> data, n - byte_size(data))
      _ -> acc
    end
  end

  defp answer_503(client) do
    body =
      "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    :gen_tcp.send(
      client,
      "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\n" <>
        "content-length: #{byte_size(body)}\r\nconnection: close\r\n\r\n" <> body
    )

    :gen_tcp.close(client)
  end

  # Reads the whole request (true once done), for faults that answer it.
  defp read_request(client), do: is_binary(read_all(client))

  defp relay(client, upstream_port) do
    {:ok, up} = :gen_tcp.connect({127, 0, 0, 1}, upstream_port, [:binary, active: false])
    me = self()
    back = spawn_link(fn -> pipe(up, client, me) end)
    :gen_tcp.controlling_process(up, back)
    pipe(client, up, me)
  end

  defp pipe(from, to, _owner) do
    case :gen_tcp.recv(from, 0) do
      {:ok, data} ->
        :gen_tcp.send(to, data)
        pipe(from, to, nil)

      {:error, _} ->
        :gen_tcp.close(to)
        :gen_tcp.close(from)
    end
  end
end
