defmodule Micelio.Storage.TieredLocalConformanceTest do
  # The shared contract through the tiered cache, over a local origin.
  use ExUnit.Case, async: true
  use Micelio.Storage.Conformance

  setup do
    dir = Micelio.Storage.Test.Tmp.dir!("conf-tiered")

    {:ok,
     opts: [
       backend: :tiered,
       origin_backend: :local,
       local_path: Path.join(dir, "origin"),
       cache_disk_path: Path.join(dir, "cache"),
       cache_memory_max_bytes: 16_000_000,
       cache_disk_max_bytes: 64_000_000
     ]}
  end
end

defmodule Micelio.Storage.TieredS3ConformanceTest do
  # The shared contract through the tiered cache, over SeaweedFS.
  use ExUnit.Case, async: true
  use Micelio.Storage.Conformance, gaps: Micelio.Storage.Test.Seaweed.gaps()

  alias Micelio.Storage.Test.Seaweed

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  setup do
    dir = Micelio.Storage.Test.Tmp.dir!("conf-tiered-s3")

    {:ok,
     opts:
       Seaweed.opts(
         backend: :tiered,
         origin_backend: :s3,
         cache_disk_path: dir,
         cache_memory_max_bytes: 16_000_000,
         cache_disk_max_bytes: 64_000_000
       )}
  end
end
