defmodule Micelio.Storage.MigrateTest do
  # mix micelio.storage.migrate and Micelio.Storage.Migration against a real
  # SeaweedFS: local to S3 and back, a run killed part-way and resumed, a
  # target that fails some writes.
  use ExUnit.Case, async: false

  alias Micelio.Storage
  alias Micelio.Storage.Migration
  alias Micelio.Storage.Test.{FaultProxy, Seaweed}

  @moduletag :s3
  @moduletag timeout: 180_000

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  setup do
    root = Path.join(System.tmp_dir!(), "micelio-migrate-#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm_rf!(root) end)
    {:ok, local: [backend: :local, local_path: root], s3: Seaweed.opts()}
  end

  defp fill(opts, n) do
    for i <- 1..n do
      key = "art/#{rem(i, 5)}/obj-#{i}.bin"
      Storage.put!(key, :crypto.strong_rand_bytes(1000 + i), opts ++ [metadata: %{"n" => "#{i}"}])
      key
    end
    |> Enum.sort()
  end

  defp contents(opts, keys), do: Map.new(keys, &{&1, Storage.get!(&1, opts)})

  test "local to SeaweedFS and back, keeping content and metadata", %{local: local, s3: s3} do
    keys = fill(local, 30)
    Storage.put!("other/x", "not under the prefix", local)

    assert {:ok, %{copied: 30, skipped: 0, failed: []}} =
             Migration.run(local, s3, prefix: "art/", concurrency: 4, verify: true)

    assert Storage.list!("", s3) == keys
    assert contents(s3, keys) == contents(local, keys)
    assert %{metadata: %{"n" => "7", "sha256" => _}} = Storage.head!("art/2/obj-7.bin", s3)

    # A second run finds everything in place.
    assert {:ok, %{copied: 0, skipped: 30}} = Migration.run(local, s3, prefix: "art/")

    back = [backend: :local, local_path: local[:local_path] <> "-back"]
    assert {:ok, %{copied: 30, failed: []}} = Migration.run(s3, back, prefix: "art/")
    assert contents(back, keys) == contents(local, keys)
    File.rm_rf!(back[:local_path])
  end

  test "a run killed part-way resumes with only what is missing", %{local: local, s3: s3} do
    keys = fill(local, 40)
    me = self()

    runner =
      spawn(fn ->
        Migration.run(local, s3,
          concurrency: 2,
          report: fn {:object, key, :copied, _} -> send(me, {:copied, key}) end
        )
      end)

    confirmed = for _ <- 1..10, do: assert_receive({:copied, key}, 30_000) && key
    Process.exit(runner, :kill)
    # A write in flight when the runner died may still land (or be listed
    # by SeaweedFS while it is being written): let them settle.
    Process.sleep(1_000)
    {:ok, present} = Storage.list("", s3)
    assert length(present) >= 10 and length(present) < 40
    assert Enum.all?(confirmed, &(&1 in present))

    assert {:ok, %{copied: copied, skipped: skipped, failed: []}} = Migration.run(local, s3)
    # Every confirmed copy is skipped; only the rest is copied.
    assert skipped >= length(confirmed)
    assert copied == 40 - skipped
    assert skipped in (length(present) - 1)..length(present)
    assert contents(s3, keys) == contents(local, keys)
  end

  test "a target that fails some writes: failures listed, the rest copied, exit 1",
       %{local: local, s3: s3} do
    fill(local, 10)
    Storage.put!("art/bad-1", "x", local)
    Storage.put!("art/bad-2", "y", local)
    {:ok, proxy} = FaultProxy.start_link(8333)
    FaultProxy.fail_matching(proxy, ~r/^PUT .*bad-/)

    through =
      Keyword.merge(s3,
        s3_endpoint: "http://127.0.0.1:#{FaultProxy.port(proxy)}",
        s3_pool_size: 0,
        s3_max_retries: 0
      )

    assert {:ok, %{copied: 10, failed: failed}} = Migration.run(local, through)
    assert [{"art/bad-1", {:s3_error, 500, _, _}}, {"art/bad-2", {:s3_error, 500, _, _}}] = failed

    # The mix task lists them and exits non-zero.

    try do
      Application.put_env(
        :micelio_storage,
        Micelio.Storage,
        through ++ [local_path: local[:local_path]]
      )

      output =
        ExUnit.CaptureIO.capture_io(:stderr, fn ->
          ExUnit.CaptureIO.capture_io(fn ->
            assert catch_exit(Mix.Tasks.Micelio.Storage.Migrate.run(~w(--from local --to s3))) ==
                     {:shutdown, 1}
          end)
        end)

      assert output =~ ~s(failed "art/bad-1")
      assert output =~ ~s(failed "art/bad-2")
    after
      Application.delete_env(:micelio_storage, Micelio.Storage)
    end
  end

  test "--dry-run copies nothing and says what it would copy", %{local: local, s3: s3} do
    fill(local, 5)
    assert {:ok, %{copied: 5, failed: []}} = Migration.run(local, s3, dry_run: true)
    assert Storage.list!("", s3) == []
  end

  test "public_url: the S3 endpoint's URL, an error on local", %{local: local, s3: s3} do
    assert {:ok, url} = Storage.public_url("a b/c.png", s3)
    assert url == "#{Seaweed.endpoint()}/#{Seaweed.bucket()}/#{s3[:s3_prefix]}a%20b/c.png"
    assert {:error, {:invalid_config, :backend, _}} = Storage.public_url("x", local)

    cdn = [
      backend: :tiered,
      origin_backend: :local,
      local_path: local[:local_path],
      cdn_base_url: "https://cdn.example.com/assets",
      cache_disk_path: local[:local_path] <> "-cache"
    ]

    assert {:ok, "https://cdn.example.com/assets/a%20b/c.png"} =
             Storage.public_url("a b/c.png", cdn)
  end
end
