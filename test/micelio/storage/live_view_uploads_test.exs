defmodule Micelio.Storage.LiveViewUploadsTest do
  # Browser uploads end to end: a Phoenix endpoint on Bandit with a
  # LiveView, headless Chromium driven through ChromeDriver picks a file
  # and submits; the object must arrive in SeaweedFS through the shipped
  # uploader (POST and PUT shapes) or through the UploadWriter.
  use ExUnit.Case, async: false

  alias Micelio.Storage.Test.{Seaweed, Tmp, UploadApp, WebDriver}

  @moduletag :s3
  @moduletag :browser
  @moduletag timeout: 300_000

  setup_all do
    :ok = Seaweed.ensure_started()
    {:ok, _} = Application.ensure_all_started(:inets)
    # Multipart from 5 MiB with 5 MiB parts: the writer's uploads are
    # multipart uploads early.
    store = Seaweed.opts(s3_multipart_threshold: 5 * 1024 * 1024, s3_part_size: 5 * 1024 * 1024)
    base = UploadApp.start!(%{store: store, test: self()})
    driver = WebDriver.start!()
    on_exit(fn -> WebDriver.stop(driver) end)
    %{base: base, driver: driver, store: store}
  end

  setup ctx do
    UploadApp.configure(%{store: ctx.store, test: self()})
    :ok
  end

  defp pick_and_submit(ctx, path, file) do
    WebDriver.visit(ctx.driver, ctx.base <> path)
    WebDriver.wait_until(ctx.driver, "return !!document.querySelector('.phx-connected')")
    input = WebDriver.find(ctx.driver, "input[type=file]")
    WebDriver.send_keys(ctx.driver, input, file)
    WebDriver.click(ctx.driver, WebDriver.find(ctx.driver, "#submit"))
  end

  defp file!(name, size) do
    path = Path.join(Tmp.dir!("browser"), name)
    File.write!(path, :crypto.strong_rand_bytes(size))
    path
  end

  for mode <- [:post, :put] do
    test "the shipped uploader, #{mode} shape: the file lands in SeaweedFS, progress reaches the view",
         ctx do
      mode = unquote(mode)
      file = file!("report #{mode}.bin", 3_000_000)
      pick_and_submit(ctx, "/#{mode}", file)

      assert_receive {:uploaded, ^mode, key}, 30_000
      assert key =~ ~r{^uploads/.+/report #{mode}\.bin$}
      assert_received {:progress, ^mode, 100}
      assert {:ok, content} = Micelio.Storage.get(key, ctx.store)
      assert content == File.read!(file)
    end
  end

  test "the UploadWriter streams a channel upload into a multipart upload", ctx do
    file = file!("big.bin", 12_000_000)
    pick_and_submit(ctx, "/writer", file)

    assert_receive {:uploaded, :writer, key}, 60_000
    assert_received {:progress, :writer, p} when p < 100
    assert {:ok, meta} = Micelio.Storage.head(key, ctx.store)
    assert meta.size == 12_000_000
    # A multipart upload's ETag names its parts.
    assert meta.etag =~ ~r/-\d+$/
    assert Micelio.Storage.stream(key, ctx.store) |> Enum.join() == File.read!(file)
  end

  test "a cancelled UploadWriter upload leaves no multipart upload behind", ctx do
    UploadApp.configure(%{store: ctx.store, test: self(), cancel_at: 60})
    file = file!("cancelled.bin", 20_000_000)
    pick_and_submit(ctx, "/writer", file)

    assert_receive {:cancelling, uuid, view}, 60_000
    key = "writer/#{uuid}"

    # Part of the file went in: a multipart upload is open on the server.
    assert {:ok, open} = Micelio.Storage.S3.incomplete_uploads(ctx.store)
    assert Enum.any?(open, &String.ends_with?(&1.key, key)), inspect(open)
    send(view, :go)

    # close(state, :cancel) returns once the server has nothing left; give
    # the channel a moment to run it.
    Process.sleep(1_000)
    assert {:ok, uploads} = Micelio.Storage.S3.incomplete_uploads(ctx.store)
    refute Enum.any?(uploads, &String.ends_with?(&1.key, key)), inspect(uploads)
    assert {:error, :not_found} = Micelio.Storage.head(key, ctx.store)
    refute_received {:uploaded, :writer, _}
  end
end
