defmodule Micelio.Storage.LocalTest do
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.Tmp

  setup do
    root = Tmp.dir!("local")
    {:ok, root: root, opts: [local_path: root]}
  end

  describe "layout" do
    test "the key is the relative path under the root", %{root: root, opts: o} do
      Storage.put!("sessions/abc/files/lib/main.ex", "code", o)
      assert File.read!(Path.join(root, "sessions/abc/files/lib/main.ex")) == "code"
    end

    test "per-call local_path selects the root", %{opts: o} do
      other = Tmp.dir!("other-root")
      Storage.put!("x", "in default", o)
      Storage.put!("x", "in other", local_path: other)
      assert Storage.get!("x", o) == "in default"
      assert Storage.get!("x", local_path: other) == "in other"
    end

    test "delete prunes directories it emptied, up to the root", %{root: root, opts: o} do
      Storage.put!("a/b/c/d", "x", o)
      Storage.put!("a/keep", "x", o)
      Storage.delete!("a/b/c/d", o)
      assert File.ls!(Path.join(root, "a")) == ["keep"]
    end

    test "a file where a directory is needed is an I/O error, not a crash", %{opts: o} do
      Storage.put!("file", "x", o)
      assert {:error, {:io, :enotdir}} = Storage.put("file/child", "y", o)
      assert Storage.get!("file", o) == "x"
    end
  end

  describe "safety" do
    test "a symlink inside the root never leads outside it", %{root: root, opts: o} do
      outside = Tmp.dir!("outside")
      File.write!(Path.join(outside, "secret"), "do not read")
      File.ln_s!(outside, Path.join(root, "escape"))
      File.ln_s!(Path.join(outside, "secret"), Path.join(root, "secret-link"))

      assert {:error, {:unsafe_path, "escape/secret"}} = Storage.get("escape/secret", o)
      assert {:error, {:unsafe_path, "secret-link"}} = Storage.get("secret-link", o)
      assert {:error, {:unsafe_path, "escape/new"}} = Storage.put("escape/new", "x", o)

      assert {:error, {:unsafe_path, "escape/new/deeper"}} =
               Storage.put("escape/new/deeper", "x", o)

      assert_raise Storage.Error, fn -> Storage.exists?("escape/secret", o) end
      assert File.ls!(outside) == ["secret"]
      assert Storage.list!("", o) == []
    end

    test "temp files are invisible to list and exists?", %{root: root, opts: o} do
      Storage.put!("dir/real", "x", o)
      File.write!(Path.join(root, "dir/.micelio-tmp-0123456789abcdef"), "half")
      File.write!(Path.join(root, ".micelio-tmp-ffff"), "half")
      assert Storage.list!("", o) == ["dir/real"]
      assert {:error, {:invalid_key, _}} = Storage.get("dir/.micelio-tmp-0123456789abcdef", o)
      assert_raise Storage.Error, fn -> Storage.exists?(".micelio-tmp-ffff", o) end
    end

    test "a failed write leaves the old content in place", %{root: root, opts: o} do
      Storage.put!("ro/k", "old", o)
      File.chmod!(Path.join(root, "ro"), 0o555)
      on_exit(fn -> File.chmod(Path.join(root, "ro"), 0o755) end)

      # Root may write anywhere; only check the failure path when permissions bite.
      case Storage.put("ro/k", "new", o) do
        {:error, {:io, :eacces}} -> assert Storage.get!("ro/k", o) == "old"
        {:ok, _} -> assert Storage.get!("ro/k", o) == "new"
      end

      assert Enum.filter(File.ls!(Path.join(root, "ro")), &String.starts_with?(&1, ".micelio")) ==
               []
    end
  end

  describe "options" do
    test "durable: true writes and deletes", %{opts: o} do
      assert {:ok, "d"} = Storage.put("d", "x", [durable: true] ++ o)
      assert Storage.get!("d", o) == "x"
      assert {:ok, "d"} = Storage.delete("d", [durable: true] ++ o)
    end

    test "an expired timeout gives {:error, :timeout} and writes nothing", %{opts: o} do
      big = :binary.copy("x", 64 * 1_048_576)
      # A 64 MiB write is 64 chunks; a 1 ms deadline expires between them.
      assert {:error, :timeout} = Storage.put("slow", big, [timeout: 1] ++ o)
      assert {:error, :not_found} = Storage.get("slow", o)
      assert Storage.list!("", o) == []
    end

    test "unknown options are rejected by name", %{opts: o} do
      assert {:error, {:invalid_config, :local_pth, _}} = Storage.get("x", [local_pth: "/x"] ++ o)
    end
  end
end
