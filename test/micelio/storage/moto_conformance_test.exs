defmodule Micelio.Storage.MotoConformanceTest do
  # The shared contract against moto's S3 server, a second S3
  # implementation none of us wrote.
  use ExUnit.Case, async: false
  use Micelio.Storage.Conformance

  alias Micelio.Storage.Test.Moto

  @moduletag :s3

  setup_all do
    Moto.ensure_started()
    :ok
  end

  setup do
    {:ok, opts: Moto.opts()}
  end
end
