defmodule Micelio.Storage.LiveViewHelpersTest do
  # The LiveView helpers without a browser: which shape presign_upload/3
  # picks, and finalize_upload/2 against SeaweedFS.
  use ExUnit.Case, async: true

  alias Micelio.Storage.LiveView, as: StorageLive
  alias Micelio.Storage.Test.Seaweed

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  defp entry(name \\ "photo.png", type \\ "image/png", size \\ 1234) do
    %Phoenix.LiveView.UploadEntry{
      uuid: "u-#{System.unique_integer([:positive])}",
      ref: "0",
      upload_ref: "phx-1",
      upload_config: :avatar,
      client_name: name,
      client_type: type,
      client_size: size
    }
  end

  defp socket, do: %Phoenix.LiveView.Socket{}

  test "POST by default: a policy bound to the key, the size and the type" do
    e = entry()
    assert {:ok, meta, _socket} = StorageLive.presign_upload(e, socket(), store: Seaweed.opts())
    assert meta.uploader == "MicelioS3Post"
    assert meta.key == "uploads/#{e.uuid}/photo.png"
    policy = Jason.decode!(Base.decode64!(meta.fields["policy"]))
    assert ["content-length-range", 0, 1234] in policy["conditions"]
    assert %{"Content-Type" => "image/png"} in policy["conditions"]
  end

  test "R2 (no POST uploads) gets a signed PUT with the content type" do
    opts = Seaweed.opts(s3_endpoint: "https://acct.r2.cloudflarestorage.com", s3_region: "auto")
    assert {:ok, meta, _} = StorageLive.presign_upload(entry(), socket(), store: opts)
    assert meta.uploader == "MicelioS3Put"
    assert meta.headers == %{"content-type" => "image/png"}
    assert meta.url =~ "X-Amz-SignedHeaders=content-type%3Bhost"
  end

  test "a client name cannot climb out of the upload's folder" do
    assert {:ok, meta, _} =
             StorageLive.presign_upload(entry("../../etc/passwd"), socket(), store: Seaweed.opts())

    assert meta.key =~ ~r{^uploads/u-\d+/\.\._\.\._etc_passwd$}
  end

  test "a failure is reported on the entry" do
    assert {:error, %{reason: {:invalid_config, :backend, _}}, _} =
             StorageLive.presign_upload(entry(), socket(), store: [backend: :memory])
  end

  test "finalize_upload moves a checked upload to its content-addressed key" do
    opts = Seaweed.opts()
    content = :crypto.strong_rand_bytes(100_000)
    sha = Base.encode16(:crypto.hash(:sha256, content), case: :lower)
    Micelio.Storage.put!("staging/1", content, opts)

    assert {:error, {:checksum_mismatch, "size:5", "size:100000"}} =
             StorageLive.finalize_upload("staging/1", opts ++ [expected_size: 5])

    assert {:error, {:checksum_mismatch, _, ^sha}} =
             StorageLive.finalize_upload("staging/1", opts ++ [sha256: String.duplicate("0", 64)])

    # Nothing moved on a mismatch.
    assert Micelio.Storage.exists?("staging/1", opts)

    assert {:ok, key} =
             StorageLive.finalize_upload(
               "staging/1",
               opts ++ [prefix: "cas/", expected_size: 100_000, sha256: String.upcase(sha)]
             )

    assert key == "cas/sha256:#{sha}"
    assert {:ok, ^content} = Micelio.Storage.get(key, opts)
    refute Micelio.Storage.exists?("staging/1", opts)

    # The same content again: the key is there, the staging key still goes.
    Micelio.Storage.put!("staging/2", content, opts)
    assert {:ok, ^key} = StorageLive.finalize_upload("staging/2", opts ++ [prefix: "cas/"])
    refute Micelio.Storage.exists?("staging/2", opts)
  end
end
