defmodule Micelio.Storage.S3sFsConformanceTest do
  # The shared contract against s3s-fs (crates.io), a fourth S3
  # implementation none of us wrote: the s3s crate over a plain directory.
  # What it lacks is skipped by name, with its gap; the last test checks
  # that one gap is real (if s3s-fs fixes it, the test fails and the table
  # must shrink).
  use ExUnit.Case, async: false

  @unlocked "s3s-fs checks If-Match and If-None-Match (on PUT and on " <>
              "CompleteMultipartUpload), then writes without a lock: " <>
              "racing writers all pass, and their bytes interleave in one file"

  use Micelio.Storage.Conformance,
    gaps: %{
      "exactly one put_if_none_match wins a race" => @unlocked,
      "exactly one copy if_absent wins a race" => @unlocked,
      "put_if_match is a compare-and-swap: no increment is lost" => @unlocked,
      "spaces, unicode, reserved characters and deep nesting round-trip" =>
        "s3s-fs answers InternalError for a key nested 40 directories deep",
      "lists only objects, never directories" =>
        "s3s-fs answers HEAD of a key that is a directory on its disk with InternalError"
    }

  alias Micelio.Storage.Test.S3sFs

  @moduletag :s3

  setup_all do
    S3sFs.ensure_started()
    :ok
  end

  setup do
    {:ok, opts: S3sFs.opts()}
  end

  test "the gap is real: HEAD of a directory is an InternalError", %{opts: o} do
    Micelio.Storage.put!("d/e/f", "x", o)

    assert {:error, {:s3_error, 500, "InternalError", _}} =
             Micelio.Storage.head("d/e", o ++ [s3_max_retries: 0])
  end

  test "the checks without a race hold: a second put_if_none_match is refused", %{opts: o} do
    assert {:ok, "once"} = Micelio.Storage.put_if_none_match("once", "1", o)
    assert {:error, :precondition_failed} = Micelio.Storage.put_if_none_match("once", "2", o)
  end
end
