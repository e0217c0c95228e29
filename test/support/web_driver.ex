defmodule Micelio.Storage.Test.WebDriver do
  @moduledoc false
  # Headless Chromium driven through ChromeDriver's W3C WebDriver API
  # (Debian's `chromium` and `chromium-driver`), over :httpc on loopback.
  # ChromeDriver runs under LoopbackServer, so no browser outlives the
  # test run.

  @element "element-6066-11e4-a52e-4f735466cecf"

  defstruct [:base, :session, :port]

  def start! do
    driver = System.get_env("MICELIO_CHROMEDRIVER") || System.find_executable("chromedriver")
    driver || raise "chromedriver not found: bin/test installs chromium and chromium-driver"
    port = Micelio.Storage.Test.LoopbackServer.free_port()

    os_port =
      Micelio.Storage.Test.LoopbackServer.start!("#{driver} --port=#{port}", port, "chromedriver")

    base = "http://127.0.0.1:#{port}"

    binary = System.get_env("MICELIO_CHROMIUM") || System.find_executable("chromium")

    {:ok, %{"value" => %{"sessionId" => session}}} =
      post(base <> "/session", %{
        capabilities: %{
          alwaysMatch: %{
            browserName: "chrome",
            "goog:chromeOptions": %{
              binary: binary,
              args:
                ~w(--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage
                       --user-data-dir=#{Path.join(System.tmp_dir!(), "micelio-chromium-#{port}")})
            }
          }
        }
      })

    %__MODULE__{base: base, session: session, port: os_port}
  end

  def stop(%__MODULE__{} = d) do
    request(:delete, "#{d.base}/session/#{d.session}", nil)
    if Port.info(d.port), do: Port.close(d.port)
  end

  def visit(d, url), do: {:ok, _} = post("#{d.base}/session/#{d.session}/url", %{url: url})

  def find(d, css) do
    {:ok, %{"value" => %{@element => id}}} =
      post("#{d.base}/session/#{d.session}/element", %{using: "css selector", value: css})

    id
  end

  def send_keys(d, element, text),
    do: {:ok, _} = post("#{d.base}/session/#{d.session}/element/#{element}/value", %{text: text})

  def click(d, element),
    do: {:ok, _} = post("#{d.base}/session/#{d.session}/element/#{element}/click", %{})

  def execute(d, script, args \\ []) do
    {:ok, %{"value" => value}} =
      post("#{d.base}/session/#{d.session}/execute/sync", %{script: script, args: args})

    value
  end

  @doc "Waits until `script` returns true in the page."
  def wait_until(d, script, timeout_ms \\ 15_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms

    Stream.repeatedly(fn -> execute(d, script) end)
    |> Enum.find(fn ok? ->
      ok? == true or
        (System.monotonic_time(:millisecond) > deadline and
           raise("timed out waiting for: #{script}")) ||
        (Process.sleep(50) && false)
    end)
  end

  defp post(url, body), do: request(:post, url, body)

  defp request(method, url, body) do
    request =
      case body do
        nil -> {String.to_charlist(url), []}
        body -> {String.to_charlist(url), [], ~c"application/json", Jason.encode!(body)}
      end

    case :httpc.request(method, request, [timeout: 60_000], body_format: :binary) do
      {:ok, {{_, status, _}, _, resp}} when status in 200..299 -> {:ok, Jason.decode!(resp)}
      {:ok, {{_, status, _}, _, resp}} -> {:error, {status, resp}}
      {:error, reason} -> {:error, reason}
    end
  end
end
