defmodule Micelio.Storage.Test.LoopbackServer do
  @moduledoc false
  # Starts an OS process that serves on a free loopback port, under a shell
  # that stops it when the BEAM closes the port (the shell's stdin), so no
  # server outlives the test run; waits until it answers HTTP.

  @doc "A free port on 127.0.0.1."
  def free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  @doc """
  Runs `command` (a shell command line that serves on `port`) and waits
  for `http://127.0.0.1:<port>/` to answer. Returns the OS port.
  """
  def start!(command, port, name) do
    script = "#{command} >/dev/null 2>&1 & pid=$!; read _; kill $pid"
    os_port = Port.open({:spawn_executable, "/bin/sh"}, [:binary, args: ["-c", script]])
    {:ok, _} = Application.ensure_all_started(:inets)
    wait_ready("http://127.0.0.1:#{port}/", name, 200)
    os_port
  end

  defp wait_ready(_url, name, 0), do: raise("#{name} did not start")

  defp wait_ready(url, name, n) do
    case :httpc.request(:get, {String.to_charlist(url), []}, [timeout: 1000], []) do
      {:ok, _} ->
        :ok

      _ ->
        Process.sleep(100)
        wait_ready(url, name, n - 1)
    end
  end
end
