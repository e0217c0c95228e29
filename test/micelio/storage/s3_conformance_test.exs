defmodule Micelio.Storage.S3ConformanceTest do
  # The shared contract, against a real SeaweedFS that verifies signatures.
  use ExUnit.Case, async: true
  use Micelio.Storage.Conformance, gaps: Micelio.Storage.Test.Seaweed.gaps()

  alias Micelio.Storage.Test.Seaweed

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  setup do
    {:ok, opts: Seaweed.opts()}
  end
end
