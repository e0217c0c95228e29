defmodule Micelio.Storage.HostProjectTest do
  # A separate mix project depends on this library by path, compiles it (the
  # Rust crate included) and calls it with its own config.
  use ExUnit.Case, async: true

  @moduletag timeout: 600_000

  test "a host app with a path dependency compiles and uses the library" do
    lib_root = Path.expand("../../..", __DIR__)
    host = Micelio.Storage.Test.Tmp.dir!("host")
    data = Path.join(host, "data")
    File.mkdir_p!(Path.join(host, "config"))
    File.mkdir_p!(Path.join(host, "lib"))

    File.write!(Path.join(host, "mix.exs"), """
    defmodule HostApp.MixProject do
      use Mix.Project
      def project, do: [app: :host_app, version: "0.1.0", deps: [{:micelio_storage, path: #{inspect(lib_root)}}]]
      def application, do: [extra_applications: [:logger]]
    end
    """)

    File.write!(Path.join(host, "config/config.exs"), """
    import Config
    config :micelio, Micelio.Storage, backend: :local, local_path: #{inspect(data)}
    """)

    File.write!(Path.join(host, "lib/host_app.ex"), """
    defmodule HostApp do
      def run do
        {:ok, "sessions/1/files/a.txt"} = Micelio.Storage.put("sessions/1/files/a.txt", "from host")
        {:ok, keys} = Micelio.Storage.list("sessions/")
        {:ok, body} = Micelio.Storage.get("sessions/1/files/a.txt")
        IO.puts("HOST-RESULT " <> inspect({keys, body}))
      end
    end
    """)

    env = [
      {"MIX_ENV", "dev"},
      # Share the already built crate; cargo only checks that it is fresh.
      {"MICELIO_STORAGE_CARGO_TARGET_DIR", cargo_target_dir(lib_root)}
    ]

    {out, status} =
      System.cmd("mix", ["run", "-e", "HostApp.run()"], cd: host, env: env, stderr_to_stdout: true)

    assert status == 0, out
    assert out =~ ~s(HOST-RESULT {["sessions/1/files/a.txt"], "from host"})
    assert File.read!(Path.join(data, "sessions/1/files/a.txt")) == "from host"

    # Once built, the library's cargo step says nothing on every mix command.
    {out, 0} =
      System.cmd("mix", ["run", "-e", "HostApp.run()"], cd: host, env: env, stderr_to_stdout: true)

    refute out =~ "Finished"
    refute out =~ "Compiling"
    assert out =~ "HOST-RESULT"

    # The library's bench task is its own, not the host app's.
    {out, status} = System.cmd("mix", ["bench"], cd: host, env: env, stderr_to_stdout: true)
    assert status != 0
    assert out =~ ~s(The task "bench" could not be found)
  end

  defp cargo_target_dir(lib_root) do
    System.get_env("MICELIO_STORAGE_CARGO_TARGET_DIR") ||
      Path.join([lib_root, "_build", "micelio_storage_cargo"])
  end
end
