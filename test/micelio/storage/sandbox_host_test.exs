defmodule Micelio.Storage.SandboxHostTest do
  # The sandbox as an app uses it: a separate mix project depends on this
  # library by path, starts the sandbox in its test_helper, and runs four
  # async test modules of ten tests each, all writing the same keys through
  # calls with no options. Its suite must pass 20 times in a row.
  use ExUnit.Case, async: true

  @moduletag timeout: 900_000

  @test_module """
  defmodule HostApp.Notes__N__Test do
    use ExUnit.Case, async: true

    setup context, do: Micelio.Storage.Sandbox.checkout(context)

    for i <- 1..10 do
      test "test \#{i}: sees only its own objects under shared keys" do
        mine = "__N__-\#{unquote(i)}-\#{System.unique_integer()}"
        assert {:ok, "notes/today"} = HostApp.save_note("today", mine)
        assert {:ok, "artifacts/today"} = HostApp.save_artifact("today", mine <> "-a")
        Process.sleep(:rand.uniform(5))
        assert {:ok, ^mine} = HostApp.read_note("today")
        assert {:ok, ["notes/today"]} = Micelio.Storage.list("notes/")
        # The store module has its own store, also isolated.
        assert {:ok, ["artifacts/today"]} = HostApp.Storage.list("artifacts/")
        assert {:error, :not_found} = Micelio.Storage.get("artifacts/today")

        # Tasks the test starts follow it ($callers).
        assert {:ok, ^mine} = Task.async(fn -> HostApp.read_note("today") end) |> Task.await()

        # Processes it did not start: only once allowed.
        parent = self()
        pid = spawn(fn -> receive do :go -> send(parent, {:read, HostApp.read_note("today")}) end end)
        spawn(fn -> send(parent, {:stranger, HostApp.read_note("today")}) end)
        assert_receive {:stranger, {:error, {:sandbox, :not_checked_out}}}, 5_000
        :ok = Micelio.Storage.Sandbox.allow(self(), pid)
        send(pid, :go)
        assert_receive {:read, {:ok, ^mine}}, 5_000

        assert {:ok, _} = Micelio.Storage.delete("notes/today")
        assert {:error, :not_found} = HostApp.read_note("today")
      end
    end
  end
  """

  test "4 async modules x 10 tests sharing key names pass 20 times in a row" do
    lib_root = Path.expand("../../..", __DIR__)
    host = Micelio.Storage.Test.Tmp.dir!("sandbox-host")

    files = %{
      "mix.exs" => """
      defmodule HostApp.MixProject do
        use Mix.Project
        def project, do: [app: :host_app, version: "0.1.0", deps: [{:micelio_storage, path: #{inspect(lib_root)}}]]
        def application, do: [extra_applications: [:logger]]
      end
      """,
      "config/config.exs" => """
      import Config
      # Never used under the sandbox: calls without options go to the test's store.
      config :micelio_storage, Micelio.Storage, local_path: "/nonexistent/never-used"
      config :host_app, HostApp.Storage, backend: :s3, s3_bucket: "never-used"
      """,
      "lib/host_app.ex" => """
      defmodule HostApp.Storage do
        use Micelio.Storage, otp_app: :host_app
      end

      defmodule HostApp do
        # App code: no storage options anywhere.
        def save_note(name, body), do: Micelio.Storage.put("notes/" <> name, body)
        def read_note(name), do: Micelio.Storage.get("notes/" <> name)
        def save_artifact(name, body), do: HostApp.Storage.put("artifacts/" <> name, body)
      end
      """,
      "test/test_helper.exs" => """
      backend = String.to_atom(System.get_env("SANDBOX_BACKEND", "memory"))
      :ok = Micelio.Storage.Sandbox.start(backend: backend)
      # A process outside any test is refused, naming the sandbox.
      {:error, {:sandbox, :not_checked_out}} = Micelio.Storage.get("notes/today")
      ExUnit.start()
      """
    }

    files =
      Enum.reduce(1..4, files, fn n, acc ->
        Map.put(acc, "test/notes#{n}_test.exs", String.replace(@test_module, "__N__", "#{n}"))
      end)

    for {path, content} <- files do
      File.mkdir_p!(Path.dirname(Path.join(host, path)))
      File.write!(Path.join(host, path), content)
    end

    env = [
      {"MIX_ENV", "test"},
      {"MICELIO_STORAGE_CARGO_TARGET_DIR", cargo_target_dir(lib_root)}
    ]

    for run <- 1..20 do
      backend = if rem(run, 5) == 0, do: "local", else: "memory"
      env = [{"SANDBOX_BACKEND", backend} | env]
      {out, status} = System.cmd("mix", ["test"], cd: host, env: env, stderr_to_stdout: true)
      assert status == 0, "run #{run} (#{backend}) failed:\n" <> out
      assert out =~ "40 tests, 0 failures", out
    end
  end

  defp cargo_target_dir(lib_root) do
    System.get_env("MICELIO_STORAGE_CARGO_TARGET_DIR") ||
      Path.join([lib_root, "_build", "micelio_storage_cargo"])
  end
end
