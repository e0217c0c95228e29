# Each emulated provider (test/support/provider_quirks.ex) passes the whole
# conformance suite with its profile, and bites without it.

for provider <- [:b2, :r2, :gcs] do
  defmodule Module.concat(Micelio.Storage.ProviderConformanceTest, Macro.camelize("#{provider}")) do
    use ExUnit.Case, async: false
    use Micelio.Storage.Conformance, gaps: Micelio.Storage.Test.Seaweed.gaps()

    alias Micelio.Storage.Test.ProviderQuirks

    @moduletag :s3
    @provider provider

    setup_all do
      {_proxy, endpoint} = ProviderQuirks.start!(@provider)
      %{endpoint: endpoint}
    end

    setup %{endpoint: endpoint} do
      {:ok, opts: ProviderQuirks.opts(endpoint, s3_provider: @provider)}
    end
  end
end

defmodule Micelio.Storage.ProviderEmulationsTest do
  use ExUnit.Case, async: false

  alias Micelio.Storage.Test.{HostileServer, ProviderQuirks}

  @moduletag :s3

  describe "without its profile, each emulation refuses what the provider refuses" do
    test "B2 refuses checksum headers; its profile sends Content-MD5 instead" do
      {proxy, endpoint} = ProviderQuirks.start!(:b2)
      plain = ProviderQuirks.opts(endpoint, s3_provider: :other)

      assert {:error, {:s3_error, 400, "InvalidArgument", message}} =
               Micelio.Storage.put("a", "b", plain)

      assert message =~ "x-amz-checksum"

      # The switch alone is enough.
      switched = Keyword.put(plain, :s3_checksums, :when_required)
      assert {:ok, "a"} = Micelio.Storage.put("a", "b", switched)
      big = :binary.copy("x", 12 * 1024 * 1024)

      assert {:ok, "big"} =
               Micelio.Storage.put_stream(
                 "big",
                 [big],
                 switched ++ [s3_multipart_threshold: 5_242_880, s3_part_size: 5_242_880]
               )

      assert {:ok, ^big} = Micelio.Storage.get("big", switched)
      HostileServer.stop(proxy)
    end

    test "R2: region auto, DeleteObjects at most 700 keys, no POST uploads" do
      {proxy, endpoint} = ProviderQuirks.start!(:r2)
      plain = ProviderQuirks.opts(endpoint, s3_provider: :other)

      # Signed for us-east-1, the default of other providers.
      assert {:error, {:s3_error, 400, "AuthorizationHeaderMalformed", _}} =
               Micelio.Storage.put("a", "b", plain)

      # With the profile the region is auto unless set.
      r2 = ProviderQuirks.opts(endpoint, s3_provider: :r2)
      keys = for i <- 1..750, do: "k/#{i}"
      for k <- keys, do: {:ok, _} = Micelio.Storage.put(k, "x", r2)

      wide = Keyword.put(r2, :s3_delete_batch_size, 1000)
      assert {:error, {:partial, [], failed}} = Micelio.Storage.delete_many(keys, wide)
      assert length(failed) == 750

      assert {:ok, deleted} = Micelio.Storage.delete_many(keys, r2)
      assert length(deleted) == 750
      assert {:ok, []} = Micelio.Storage.list("k/", r2)

      assert {:error, {:invalid_config, :s3_post_uploads, _}} =
               Micelio.Storage.presigned_post("up/a", r2)

      HostileServer.stop(proxy)
    end

    test "GCS: DeleteObjects is NotImplemented; keys go one by one" do
      {proxy, endpoint} = ProviderQuirks.start!(:gcs)
      plain = ProviderQuirks.opts(endpoint, s3_provider: :other)
      for k <- ~w(a b c), do: Micelio.Storage.put!(k, "x", plain)

      # Without the profile, the NotImplemented answer falls back.
      assert {:ok, ~w(a b c)} = Micelio.Storage.delete_many(~w(a b c), plain)

      deletes =
        for {method, _path, query} <- HostileServer.requests(proxy),
            method in ["POST", "DELETE"],
            do: {method, Map.has_key?(query, "delete")}

      # One DeleteObjects: NotImplemented is not retried.
      assert Enum.count(deletes, &(&1 == {"POST", true})) == 1
      assert Enum.count(deletes, &(&1 == {"DELETE", false})) == 3

      # The store remembers: the next batch asks no DeleteObjects.
      for k <- ~w(d e), do: Micelio.Storage.put!(k, "x", plain)
      assert {:ok, ~w(d e)} = Micelio.Storage.delete_many(~w(d e), plain)

      posts =
        for {"POST", _path, %{"delete" => _}} <- HostileServer.requests(proxy),
            do: :delete_objects

      assert posts == [:delete_objects]
      HostileServer.stop(proxy)
    end
  end
end
