defmodule Micelio.Storage.MotoLargeObjectsTest do
  # The large-object cases (test/support/large_object_cases.ex) against
  # moto, an S3 implementation none of us wrote.
  use ExUnit.Case, async: false
  use Micelio.Storage.LargeObjectCases, server: Micelio.Storage.Test.Moto

  @moduletag :s3
end
