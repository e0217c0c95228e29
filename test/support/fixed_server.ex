defmodule Micelio.Storage.Test.FixedServer do
  @moduledoc false
  # A plain HTTP/1.1 server on a loopback port (`:gen_tcp`) that answers
  # every request with the same status, headers and body, and counts the
  # requests it got. For answers no real S3 server gives: HTML from a
  # proxy, cut-off documents, redirects.

  @doc "Starts it; returns `{port, counter}`."
  def start!(status, headers, body) do
    {:ok, listen} =
      :gen_tcp.listen(0, [:binary, active: false, reuseaddr: true, ip: {127, 0, 0, 1}])

    {:ok, port} = :inet.port(listen)
    counter = :counters.new(1, [])
    owner = self()

    pid =
      spawn(fn ->
        ref = Process.monitor(owner)
        accept(listen, {status, headers, body}, counter, ref)
      end)

    :gen_tcp.controlling_process(listen, pid)
    {port, counter}
  end

  @doc "Requests answered so far."
  def requests(counter), do: :counters.get(counter, 1)

  defp accept(listen, answer, counter, ref) do
    case :gen_tcp.accept(listen, 200) do
      {:ok, socket} ->
        spawn(fn -> serve(socket, answer, counter) end)
        accept(listen, answer, counter, ref)

      {:error, :timeout} ->
        receive do
          {:DOWN, ^ref, _, _, _} -> :gen_tcp.close(listen)
        after
          0 -> accept(listen, answer, counter, ref)
        end

      {:error, _} ->
        :ok
    end
  end

  defp serve(socket, {status, headers, body} = answer, counter) do
    case read_request(socket, "") do
      :closed ->
        :gen_tcp.close(socket)

      :ok ->
        :counters.add(counter, 1, 1)

        head =
          ["HTTP/1.1 #{status} X\r\n", "content-length: #{byte_size(body)}\r\n"] ++
            for({k, v} <- headers, do: "#{k}: #{v}\r\n") ++ ["\r\n"]

        :gen_tcp.send(socket, [head, body])
        serve(socket, answer, counter)
    end
  end

  # Reads one request: headers, then a body of content-length bytes.
  defp read_request(socket, acc) do
    case String.split(acc, "\r\n\r\n", parts: 2) do
      [head, rest] ->
        length =
          case Regex.run(~r/content-length:\s*(\d+)/i, head) do
            [_, n] -> String.to_integer(n)
            nil -> 0
          end

        read_body(socket, byte_size(rest), length)

      [_] ->
        case :gen_tcp.recv(socket, 0, 5_000) do
          {:ok, data} -> read_request(socket, acc <> data)
          {:error, _} -> :closed
        end
    end
  end

  defp read_body(_socket, have, want) when have >= want, do: :ok

  defp read_body(socket, have, want) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, data} -> read_body(socket, have + byte_size(data), want)
      {:error, _} -> :closed
    end
  end
end
