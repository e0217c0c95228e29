defmodule Micelio.Storage.S3BucketOperationsTest do
  # Bucket and object operations for apps that provision their own
  # buckets, against SeaweedFS and moto (two S3 implementations none of us
  # wrote).
  use ExUnit.Case, async: false

  alias Micelio.Storage.S3
  alias Micelio.Storage.Test.{Moto, Seaweed}

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
    Moto.ensure_started()
    :ok
  end

  @rules [
    %{
      allowed_origins: ["https://app.example.com"],
      allowed_methods: ["POST", "PUT"],
      allowed_headers: ["*"],
      expose_headers: ["ETag"],
      max_age_seconds: 3600
    }
  ]

  for server <- [:seaweedfs, :moto] do
    describe "#{server}" do
      @describetag server: server

      test "create_bucket, also when it exists and is ours", %{server: server} do
        bucket = "made-#{System.unique_integer([:positive])}"
        opts = Keyword.merge(opts(server), s3_bucket: bucket, s3_prefix: "")
        # SeaweedFS creates a bucket on its first write; moto does not.
        if server == :moto,
          do: assert({:error, {:no_such_bucket, ^bucket}} = Micelio.Storage.put("a", "b", opts))

        assert {:ok, ^bucket} = S3.create_bucket(opts)
        assert {:ok, ^bucket} = S3.create_bucket(opts)
        assert {:ok, "a"} = Micelio.Storage.put("a", "b", opts)
      end

      test "CORS rules round-trip; a bucket without rules has none", %{server: server} do
        bucket = "cors-#{System.unique_integer([:positive])}"
        opts = Keyword.merge(opts(server), s3_bucket: bucket, s3_prefix: "")
        {:ok, _} = S3.create_bucket(opts)
        assert {:ok, []} = S3.get_bucket_cors(opts)
        assert :ok = S3.put_bucket_cors(@rules, opts)
        assert {:ok, @rules} = S3.get_bucket_cors(opts)
      end

      test "a lifecycle rule that aborts incomplete uploads", %{server: server} do
        bucket = "life-#{System.unique_integer([:positive])}"
        opts = Keyword.merge(opts(server), s3_bucket: bucket, s3_prefix: "")
        {:ok, _} = S3.create_bucket(opts)
        assert :ok = S3.put_lifecycle_abort_incomplete(7, opts)
        assert {:error, {:invalid_config, :days, _}} = S3.put_lifecycle_abort_incomplete(0, opts)
      end

      test "storage class, ACL and tags on puts, one-shot and multipart", %{server: server} do
        opts = opts(server)
        tags = %{"team" => "web", "build id" => "42"}

        assert {:ok, "small.txt"} =
                 Micelio.Storage.put(
                   "small.txt",
                   "x",
                   opts ++ [tags: tags, storage_class: "STANDARD_IA", acl: :private]
                 )

        assert {:ok, ^tags} = S3.get_tags("small.txt", opts)
        assert {:ok, %{storage_class: "STANDARD_IA"}} = Micelio.Storage.head("small.txt", opts)

        big = :binary.copy("0123456789", 2_000_000)

        assert {:ok, "big.bin"} =
                 Micelio.Storage.put_stream(
                   "big.bin",
                   [big],
                   opts ++ [tags: %{"k" => "v"}, storage_class: "STANDARD_IA"]
                 )

        assert {:ok, %{"k" => "v"}} = S3.get_tags("big.bin", opts)

        assert {:ok, %{storage_class: "STANDARD_IA", size: 20_000_000}} =
                 Micelio.Storage.head("big.bin", opts)

        Micelio.Storage.put!("plain.txt", "y", opts)
        assert {:ok, %{}} = S3.get_tags("plain.txt", opts)
      end

      test "put_tags replaces an object's tags and nothing else", %{server: server} do
        opts = opts(server)
        key = "retag-#{System.unique_integer([:positive])}.txt"
        {:ok, _} = Micelio.Storage.put(key, "body", opts ++ [tags: %{"old" => "1"}])
        {:ok, %{etag: etag}} = Micelio.Storage.head(key, opts)

        assert :ok = S3.put_tags(key, %{"new" => "2", "a b" => "x=y/z@é"}, opts)
        assert {:ok, %{"new" => "2", "a b" => "x=y/z@é"} = tags} = S3.get_tags(key, opts)
        assert map_size(tags) == 2
        assert {:ok, %{etag: ^etag}} = Micelio.Storage.head(key, opts)
        assert {:ok, "body"} = Micelio.Storage.get(key, opts)

        assert :ok = S3.put_tags(key, %{}, opts)
        assert {:ok, %{}} = S3.get_tags(key, opts)

        assert {:error, :not_found} = S3.put_tags("missing-#{key}", %{"a" => "b"}, opts)
      end
    end
  end

  test "backends without them refuse storage class, ACL and tags" do
    for opts <- [
          [backend: :memory],
          [backend: :local, local_path: Micelio.Storage.Test.Tmp.dir!("tags")]
        ],
        extra <- [[tags: %{"a" => "b"}], [storage_class: "GLACIER"], [acl: :public_read]] do
      assert {:error, {:invalid_config, :backend, message}} =
               Micelio.Storage.put("a", "b", opts ++ extra)

      assert message =~ "s3 backend"
    end

    assert {:error, {:invalid_config, :backend, _}} =
             S3.get_tags("a", storage: elem(Micelio.Storage.open(backend: :memory), 1))
  end

  test "a tiered store answers its origin's bucket operations" do
    # The cache changes nothing these touch, so it hands them to the origin
    # (a bucket of its own here, so the CORS rules are ours alone).
    bucket = "tiered-#{System.unique_integer([:positive])}"

    opts =
      Seaweed.opts(
        backend: :tiered,
        origin_backend: :s3,
        s3_bucket: bucket,
        s3_prefix: "",
        cache_disk_path: Micelio.Storage.Test.Tmp.dir!("tiered-bucket")
      )

    assert {:ok, ^bucket} = S3.create_bucket(opts)
    assert {:ok, []} = S3.get_bucket_cors(opts)
    assert :ok = S3.put_bucket_cors(@rules, opts)
    assert {:ok, @rules} = S3.get_bucket_cors(opts)
    assert :ok = S3.put_lifecycle_abort_incomplete(3, opts)
    assert {:ok, "t.txt"} = Micelio.Storage.put("t.txt", "x", opts ++ [tags: %{"a" => "1"}])
    assert {:ok, %{"a" => "1"}} = S3.get_tags("t.txt", opts)
    assert :ok = S3.put_tags("t.txt", %{"b" => "2"}, opts)
    assert {:ok, %{"b" => "2"}} = S3.get_tags("t.txt", opts)
  end

  test "stores without a bucket refuse each bucket operation, naming it" do
    local = [backend: :local, local_path: Micelio.Storage.Test.Tmp.dir!("no-bucket")]
    tiered = [backend: :tiered, origin_backend: :local, local_path: local[:local_path]]

    for opts <- [[backend: :memory], local, tiered] do
      for {call, feature} <- [
            {fn -> S3.create_bucket(opts) end, "creating buckets"},
            {fn -> S3.get_bucket_cors(opts) end, "CORS rules"},
            {fn -> S3.put_bucket_cors(@rules, opts) end, "CORS rules"},
            {fn -> S3.put_lifecycle_abort_incomplete(2, opts) end, "lifecycle rules"},
            {fn -> S3.get_tags("a", opts) end, "object tags"},
            {fn -> S3.put_tags("a", %{"k" => "v"}, opts) end, "object tags"}
          ] do
        assert {:error, {:invalid_config, :backend, message}} = call.()
        assert message =~ feature
        assert message =~ "need the s3 backend"
      end
    end
  end

  test "bad options are clear errors" do
    opts = Seaweed.opts()

    assert {:error, {:invalid_config, :acl, _}} =
             Micelio.Storage.put("a", "b", opts ++ [acl: :everyone])

    assert {:error, {:invalid_config, :tags, _}} =
             Micelio.Storage.put("a", "b", opts ++ [tags: [a: 1]])

    eleven = Map.new(1..11, &{"k#{&1}", "v"})

    assert {:error, {:invalid_config, :tags, _}} =
             Micelio.Storage.put("a", "b", opts ++ [tags: eleven])

    assert {:error, {:invalid_config, :rules, _}} = S3.put_bucket_cors([%{origins: ["x"]}], opts)
    assert {:error, {:invalid_config, :rules, _}} = S3.put_bucket_cors("x", opts)

    # Characters servers refuse (InvalidTag) are refused here first, naming
    # the tag, on a put and on put_tags alike.
    for tags <- [%{"a&b" => "x"}, %{"a" => "<c>"}, %{"aws:owner" => "me"}] do
      assert {:error, {:invalid_config, :tags, message}} =
               Micelio.Storage.put("a", "b", opts ++ [tags: tags])

      assert message =~ inspect(tags |> Map.keys() |> hd())
      assert {:error, {:invalid_config, :tags, _}} = S3.put_tags("a", tags, opts)
    end

    # Tags are checked before any request, as on a put.
    assert {:error, {:invalid_config, :tags, _}} = S3.put_tags("a", eleven, opts)
    assert {:error, {:invalid_config, :tags, _}} = S3.put_tags("a", %{"k" => 1}, opts)
    assert {:error, {:invalid_config, :tags, _}} = S3.put_tags("a", nil, opts)
    long = String.duplicate("v", 257)
    assert {:error, {:invalid_config, :tags, _}} = S3.put_tags("a", %{"k" => long}, opts)
    assert {:error, {:invalid_key, _}} = S3.put_tags("../a", %{"k" => "v"}, opts)
  end

  test "a copy over the threshold goes in parts (UploadPartCopy), keeping attributes" do
    # The threshold (5 GiB in use) is lowered so a 12 MiB object crosses it.
    opts =
      Seaweed.opts(s3_copy_multipart_threshold: 5 * 1024 * 1024, s3_part_size: 5 * 1024 * 1024)

    content = :crypto.strong_rand_bytes(12 * 1024 * 1024)

    {:ok, _} =
      Micelio.Storage.put(
        "src.bin",
        content,
        opts ++ [content_type: "application/x-test", metadata: %{"owner" => "ana"}]
      )

    assert {:ok, "dst.bin"} = Micelio.Storage.copy("src.bin", "dst.bin", opts)
    assert {:ok, ^content} = Micelio.Storage.get("dst.bin", opts)
    {:ok, meta} = Micelio.Storage.head("dst.bin", opts)
    assert meta.content_type == "application/x-test"
    assert meta.metadata == %{"owner" => "ana"}
    # A copy in parts has a multipart ETag: three 5 MiB ranges.
    assert meta.etag =~ ~r/-3$/
    assert {:ok, []} = Micelio.Storage.S3.incomplete_uploads(opts)

    # A missing source fails before any upload starts.
    assert {:error, :not_found} = Micelio.Storage.copy("none.bin", "x.bin", opts)
  end

  defp opts(:seaweedfs), do: Seaweed.opts()
  defp opts(:moto), do: Moto.opts()
end
