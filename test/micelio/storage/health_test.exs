defmodule Micelio.Storage.HealthTest do
  # health/1 really round-trips, on real servers.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{Seaweed, Tmp}

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  test "local: writes, reads and deletes a probe, leaving nothing" do
    root = Tmp.dir!("health-local")
    assert :ok = Storage.health(local_path: root)
    assert {:ok, []} = Storage.list("", local_path: root)
    assert File.ls!(root) == []
  end

  test "local: a root that cannot be used is an error" do
    assert {:error, {:io, _}} = Storage.health(local_path: "/proc/nope")
    root = Tmp.dir!("health-ro")
    File.write!(Path.join(root, ".micelio-health"), "a file where the probe directory goes")
    assert {:error, {:io, _}} = Storage.health(local_path: root)
  end

  test "S3: the bucket is reachable and the credentials accepted" do
    assert :ok = Storage.health(Seaweed.opts())
  end

  test "S3: rejected credentials, a missing bucket, an unreachable endpoint" do
    assert {:error, {:forbidden, _}} =
             Storage.health(Seaweed.opts(s3_secret_access_key: "wrong-secret"))

    assert {:error, {:no_such_bucket, "missing-health-bucket"}} =
             Storage.health(Seaweed.opts(s3_bucket: "missing-health-bucket"))

    assert {:error, {:network, reason}} =
             Storage.health(Seaweed.opts(s3_endpoint: "http://127.0.0.1:1", s3_max_retries: 0))

    assert reason =~ "127.0.0.1:1"
  end

  test "S3: an endpoint that never answers is a timeout within the call's timeout" do
    {:ok, listen} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(listen)
    o = Seaweed.opts(s3_endpoint: "http://127.0.0.1:#{port}", timeout: 300)
    {micros, result} = :timer.tc(fn -> Storage.health(o) end)
    assert result == {:error, :timeout}
    assert micros < 5_000_000
  end

  test "tiered: the origin, the disk tier, and the CDN when set" do
    dir = Tmp.dir!("health-tiered")

    o = [
      backend: :tiered,
      origin_backend: :local,
      local_path: Path.join(dir, "origin"),
      cache_disk_path: Path.join(dir, "cache")
    ]

    assert :ok = Storage.health(o)

    with_cdn =
      Keyword.merge(o,
        cache_disk_path: Path.join(dir, "cache-cdn"),
        cdn_base_url: "http://127.0.0.1:1"
      )

    assert {:error, {:network, reason}} = Storage.health(with_cdn)
    assert reason =~ "CDN"

    over_s3 =
      Seaweed.opts(
        backend: :tiered,
        origin_backend: :s3,
        cache_disk_path: Path.join(dir, "cache-s3")
      )

    assert :ok = Storage.health(over_s3)

    assert {:error, {:forbidden, _}} =
             Storage.health(
               Keyword.merge(over_s3,
                 s3_secret_access_key: "wrong",
                 cache_disk_path: Path.join(dir, "c3")
               )
             )
  end
end
