defmodule Micelio.Storage.S3sFsLargeObjectsTest do
  # The large-object cases (test/support/large_object_cases.ex) against
  # s3s_fs, an S3 implementation none of us wrote.
  use ExUnit.Case, async: false
  use Micelio.Storage.LargeObjectCases, server: Micelio.Storage.Test.S3sFs

  @moduletag :s3
end
