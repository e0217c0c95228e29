defmodule Micelio.Storage.LoopbackServerTest do
  # The launcher of the test servers (moto, s3rver, s3s-fs, ChromeDriver):
  # when the process that started one dies, the server and every process
  # it started are gone (ChromeDriver's Chromium used to outlive the run).
  use ExUnit.Case, async: true

  alias Micelio.Storage.Test.LoopbackServer

  test "a server and its children stop when their owner dies" do
    port = LoopbackServer.free_port()
    # A child that would outlive its parent, then the server itself.
    marker = 300 + :rand.uniform(600)
    child = "sleep #{marker}.#{System.unique_integer([:positive])}"

    command = "sh -c '#{child} & exec python3 -m http.server #{port} --bind 127.0.0.1'"

    owner =
      Task.async(fn ->
        LoopbackServer.start!(command, port, "http.server")
        :started
      end)

    assert :started = Task.await(owner, 30_000)

    assert Enum.any?(1..100, fn _ ->
             (running?(child) == false and not answers?(port)) or
               (Process.sleep(50) && false)
           end)
  end

  defp running?(pattern) do
    {_, status} = System.cmd("pgrep", ["-f", pattern])
    status == 0
  end

  defp answers?(port) do
    match?({:ok, _}, :gen_tcp.connect({127, 0, 0, 1}, port, [], 200))
  end
end
