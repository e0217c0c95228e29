defmodule Micelio.Storage.SandboxEdgesTest do
  # The sandbox at its edges, as a Phoenix team's async tests meet them:
  # per-call options, presigning, and allow/2 between two tests. The
  # sandbox is global to a VM, so the tests run in a VM of their own, with
  # an app config that points at an S3 endpoint nothing listens on: a call
  # that leaves the sandbox fails loudly.
  use ExUnit.Case, async: true

  @script ~S"""
  Application.put_env(:micelio, Micelio.Storage,
    backend: :s3, s3_bucket: "real-bucket", s3_region: "us-east-1",
    s3_endpoint: "http://127.0.0.1:1", s3_access_key_id: "id",
    s3_secret_access_key: "real-secret", timeout: 2_000, s3_max_retries: 0)
  Application.ensure_all_started(:micelio_storage)

  defmodule Sessions do
    use Micelio.Storage, otp_app: :sandbox_edges
  end

  Application.put_env(:sandbox_edges, Sessions, Application.get_env(:micelio, Micelio.Storage))
  # A call without options before the sandbox starts: its store (the real
  # one) is remembered for the next such call, which skips every lookup.
  {:error, {:network, _}} = Micelio.Storage.get("before-the-sandbox")
  {:error, {:network, _}} = Micelio.Storage.get("before-the-sandbox")
  :ok = Micelio.Storage.Sandbox.start(backend: :memory)
  ExUnit.start(autorun: false, max_cases: 4)

  defmodule StartedLateTest do
    use ExUnit.Case, async: true
    setup context, do: Micelio.Storage.Sandbox.checkout(context)

    test "a store remembered before the sandbox started is not reached after" do
      assert {:error, :not_found} = Micelio.Storage.get("before-the-sandbox")
      me = self()
      spawn(fn -> send(me, {:stranger, Micelio.Storage.get("before-the-sandbox")}) end)
      assert_receive {:stranger, {:error, {:sandbox, :not_checked_out}}}, 5_000
    end
  end

  defmodule PerCallTest do
    use ExUnit.Case, async: true
    alias Micelio.Storage
    setup context, do: Micelio.Storage.Sandbox.checkout(context)

    test "options that only shape the call stay in the test's store" do
      assert {:ok, "k"} = Storage.put("k", "mine", timeout: 1_000)
      assert Storage.get("k", timeout: 5_000) == {:ok, "mine"}
      assert Storage.get("k", range: {1, 2}, timeout: 5_000) == {:ok, "in"}
      assert {:ok, %{backend: :memory}} = Storage.open(timeout: 3_000)
      assert :ok = Storage.health(timeout: 2_000)
      assert {:ok, "n"} = Sessions.put("n", "named", timeout: 1_000)
      assert Sessions.get("n", timeout: 5_000) == {:ok, "named"}
      assert Storage.put_stream("s", Stream.take(["a", "b"], 2), timeout: 1_000) == {:ok, "s"}
      assert Storage.get("s") == {:ok, "ab"}
      assert {:error, {:invalid_config, :timeout, _}} = Storage.get("k", timeout: -1)
    end

    test "options that pick a store leave it, as documented" do
      assert {:error, _} = Storage.get("k", backend: :s3)
    end

    test "presigned URLs work without a server" do
      assert {:ok, url} = Storage.presigned_url("uploads/a b.png", method: :put, expires_in: 60)
      assert String.starts_with?(url, "http://sandbox.micelio.invalid/sandbox/uploads/a%20b.png?")
      assert url =~ "X-Amz-Signature="
      refute url =~ "real-bucket"
      assert {:ok, named} = Sessions.presigned_url("x")
      assert String.starts_with?(named, "http://sandbox.micelio.invalid/sandbox/x?")
    end
  end

  defmodule OwnerATest do
    use ExUnit.Case, async: true
    alias Micelio.Storage
    setup context, do: Micelio.Storage.Sandbox.checkout(context)

    test "keeps its own store when another test tries to allow it" do
      {:ok, _} = Storage.put("shared", "a")
      stray = spawn(fn -> Process.sleep(:infinity) end)
      :ok = Micelio.Storage.Sandbox.allow(self(), stray)
      :ok = Micelio.Storage.Sandbox.allow(self(), stray)
      :global.register_name(:sandbox_owner_a, self())
      :global.register_name(:sandbox_stray, stray)
      assert_receive :tried, 20_000
      assert Storage.get("shared") == {:ok, "a"}
    end
  end

  defmodule OwnerBTest do
    use ExUnit.Case, async: true
    alias Micelio.Storage
    setup context, do: Micelio.Storage.Sandbox.checkout(context)

    defp wait_for(name) do
      case :global.whereis_name(name) do
        :undefined -> Process.sleep(20) && wait_for(name)
        pid -> pid
      end
    end

    test "cannot take another test's process" do
      {:ok, _} = Storage.put("shared", "b")
      a = wait_for(:sandbox_owner_a)
      stray = wait_for(:sandbox_stray)
      assert Micelio.Storage.Sandbox.allow(self(), a) == {:error, {:sandbox, :already_checked_out}}
      assert Micelio.Storage.Sandbox.allow(self(), stray) == {:error, {:sandbox, :already_allowed}}
      send(a, :tried)
      assert Storage.get("shared") == {:ok, "b"}
    end
  end

  %{failures: failures} = ExUnit.run()
  System.halt(if failures == 0, do: 0, else: 1)
  """

  @tag timeout: 120_000
  test "per-call options, presigning and allow/2 under the sandbox" do
    ebin = :code.lib_dir(:micelio_storage, :ebin)

    {out, status} =
      System.cmd(System.find_executable("elixir"), ["-pa", to_string(ebin), "-e", @script],
        stderr_to_stdout: true
      )

    assert status == 0, out
    assert out =~ "6 tests, 0 failures"
  end
end
