defmodule Micelio.Storage.MigrateSafetyTest do
  # The migration's temp directory is unpredictable, private (0700), never
  # reached through a planted symlink and removed afterwards; the mix task
  # maps backend names without the atom table, so it works in a fresh VM.
  # Changes TMPDIR for the VM: not async.
  use ExUnit.Case, async: false

  alias Micelio.Storage
  alias Micelio.Storage.Migration
  alias Micelio.Storage.Test.{Seaweed, Tmp}

  @moduletag :s3

  test "objects in transit pass through a fresh private directory, removed afterwards" do
    tmp = Tmp.dir!("migrate-tmpdir")
    other = Tmp.dir!("migrate-elsewhere")
    # What a hostile user could plant at the old predictable names.
    for n <- 1..50, do: File.ln_s!(other, Path.join(tmp, "micelio-migrate-#{n}"))
    from = [local_path: Tmp.dir!("migrate-from")]
    to = [local_path: Tmp.dir!("migrate-to")]
    for i <- 1..5, do: {:ok, _} = Storage.put("m/#{i}", "object #{i}", from)

    previous = System.get_env("TMPDIR")
    System.put_env("TMPDIR", tmp)

    seen =
      try do
        me = self()

        report = fn _ ->
          dirs =
            for name <- File.ls!(tmp), String.starts_with?(name, "micelio-migrate-") do
              path = Path.join(tmp, name)
              {:ok, stat} = File.lstat(path)
              {name, stat.type, Bitwise.band(stat.mode, 0o777)}
            end

          send(me, {:dirs, dirs})
        end

        assert {:ok, %{copied: 5}} = Migration.run(from, to, report: report)
        collect([])
      after
        if previous, do: System.put_env("TMPDIR", previous), else: System.delete_env("TMPDIR")
      end

    made = for {name, :directory, mode} <- seen, uniq: true, do: {name, mode}
    assert [{name, 0o700}] = made
    refute name =~ ~r/^micelio-migrate-\d+$/
    # Nothing went through the planted links, and the directory is gone.
    assert File.ls!(other) == []
    refute File.exists?(Path.join(tmp, name))
    assert Storage.get("m/3", to) == {:ok, "object 3"}
  end

  defp collect(acc) do
    receive do
      {:dirs, dirs} -> collect(dirs ++ acc)
    after
      0 -> acc
    end
  end

  @tag timeout: 180_000
  test "mix micelio.storage.migrate --from s3 --to local works in a fresh VM" do
    :ok = Seaweed.ensure_started()
    s3 = Seaweed.opts()
    {:ok, _} = Storage.put("fresh/a", "from s3", s3)
    target = Tmp.dir!("migrate-fresh-target")

    env = [
      {"MIX_ENV", "test"},
      {"S3_BUCKET", s3[:s3_bucket]},
      {"S3_ENDPOINT", s3[:s3_endpoint]},
      {"S3_REGION", "us-east-1"},
      {"S3_PREFIX", s3[:s3_prefix]},
      {"AWS_ACCESS_KEY_ID", Seaweed.access_key()},
      {"AWS_SECRET_ACCESS_KEY", Seaweed.secret_key()},
      {"STORAGE_LOCAL_PATH", target}
    ]

    {out, status} =
      System.cmd("mix", ["micelio.storage.migrate", "--from", "s3", "--to", "local"],
        cd: Path.expand("../../..", __DIR__),
        env: env,
        stderr_to_stdout: true
      )

    assert status == 0, out
    refute out =~ Seaweed.secret_key()
    assert File.read!(Path.join(target, "fresh/a")) == "from s3"
  end
end
