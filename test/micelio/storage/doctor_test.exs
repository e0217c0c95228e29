defmodule Micelio.Storage.DoctorTest do
  # mix micelio.storage.doctor and S3.probe/1 against SeaweedFS and the
  # provider emulations: each reports what the emulation lacks.
  use ExUnit.Case, async: false

  alias Micelio.Storage.Test.{ProviderQuirks, Seaweed}

  @moduletag :s3
  @moduletag timeout: 300_000

  defmodule Store do
    use Micelio.Storage, otp_app: :micelio_storage
  end

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  setup do
    Mix.shell(Mix.Shell.Process)
    on_exit(fn -> Mix.shell(Mix.Shell.IO) end)
    :ok
  end

  # Runs the task on the store module configured with `opts`: its exit
  # status and what it printed.
  defp doctor(opts) do
    Application.put_env(:micelio_storage, Store, opts)

    status =
      try do
        Mix.Tasks.Micelio.Storage.Doctor.run(["--store", inspect(Store)])
        0
      catch
        :exit, {:shutdown, code} -> code
      end

    {status, printed()}
  end

  defp printed do
    receive do
      {:mix_shell, _, [line]} -> line <> "\n" <> printed()
    after
      0 -> ""
    end
  end

  defp row(out, cap), do: Regex.run(~r/^[* ] #{cap}\s+(.*)$/m, out, capture: :all_but_first)

  test "SeaweedFS: everything the library needs works, and the probe cleans up" do
    opts = Seaweed.opts(s3_provider: :seaweedfs)
    {status, out} = doctor(opts)
    assert status == 0, out

    for cap <-
          ~w(reachable credentials bucket put get head range if_none_match if_match copy_if_absent multipart delete_objects post_policy delete),
        do: assert(row(out, cap) == ["ok"], "#{cap}: #{out}")

    assert row(out, "tls") == ["no: :plain_http"]
    assert {:ok, []} = Micelio.Storage.list("", opts)
    assert {:ok, []} = Micelio.Storage.S3.incomplete_uploads(opts)
  end

  test "probe/1 answers a map of every capability" do
    {:ok, results} = Micelio.Storage.S3.probe(Seaweed.opts())
    assert Map.keys(results) |> Enum.sort() == Enum.sort(Micelio.Storage.S3.Probe.order())
    assert results.put == :ok
  end

  test "B2: its profile works; the checksum headers are reported missing" do
    {_proxy, endpoint} = ProviderQuirks.start!(:b2)
    {status, out} = doctor(ProviderQuirks.opts(endpoint, s3_provider: :b2))
    assert status == 0, out
    assert [no] = row(out, "checksum_headers")
    assert no =~ "InvalidArgument"
    assert row(out, "content_md5") == ["ok"]
    assert out =~ "profile: b2"
  end

  test "a switch set in the config does not hide what the bucket lacks" do
    # s3_checksums: :when_required is the right setting for B2; the probe of
    # the checksum headers must still send them, and see them refused.
    {_proxy, endpoint} = ProviderQuirks.start!(:b2)

    {status, out} =
      doctor(ProviderQuirks.opts(endpoint, s3_provider: :other, s3_checksums: :when_required))

    assert status == 0, out
    assert [no] = row(out, "checksum_headers")
    assert no =~ "InvalidArgument"
  end

  test "B2 under the wrong profile: exits 1 and says which setting to use" do
    {_proxy, endpoint} = ProviderQuirks.start!(:b2)
    {status, out} = doctor(ProviderQuirks.opts(endpoint, s3_provider: :other))
    assert status == 1
    assert out =~ "missing what the library needs"
    assert out =~ "s3_checksums: :when_required"
  end

  test "R2: unequal parts and POST uploads are reported missing" do
    {_proxy, endpoint} = ProviderQuirks.start!(:r2)
    {status, out} = doctor(ProviderQuirks.opts(endpoint, s3_provider: :r2))
    assert status == 0, out
    assert [unequal] = row(out, "multipart_unequal_parts")
    assert unequal =~ "InvalidPart"
    assert [post] = row(out, "post_policy")
    assert post =~ "no:"
    assert row(out, "multipart") == ["ok"]
    # R2's own header, which the emulation enforces.
    assert row(out, "copy_if_absent") == ["ok"]
  end

  test "moto ignores If-None-Match on CopyObject: the doctor names the mechanism that works" do
    Micelio.Storage.Test.Moto.ensure_started()
    opts = Micelio.Storage.Test.Moto.opts(s3_copy_if_absent: :if_none_match)
    {_status, out} = doctor(opts)
    assert [no] = row(out, "copy_if_absent")
    assert no =~ ":multipart"
    assert out =~ "s3_copy_if_absent: :multipart"
    assert {:ok, []} = Micelio.Storage.list("", opts)
  end

  test "s3rver has no conditional copy at all: the doctor says to refuse such copies" do
    Micelio.Storage.Test.S3rver.ensure_started()
    {_status, out} = doctor(Micelio.Storage.Test.S3rver.opts())
    assert [no] = row(out, "copy_if_absent")
    assert no =~ "unsupported"
    assert out =~ "s3_copy_if_absent: :none"
  end

  test "GCS: DeleteObjects is reported missing" do
    {_proxy, endpoint} = ProviderQuirks.start!(:gcs)
    {status, out} = doctor(ProviderQuirks.opts(endpoint, s3_provider: :gcs))
    assert status == 0, out
    assert [no] = row(out, "delete_objects")
    assert no =~ "NotImplemented"
  end

  test "an unreachable endpoint exits 1" do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)

    {status, out} =
      doctor(Seaweed.opts(s3_endpoint: "http://127.0.0.1:#{port}", s3_max_retries: 0))

    assert status == 1
    assert [no] = row(out, "reachable")
    assert no =~ "no:"
  end
end
