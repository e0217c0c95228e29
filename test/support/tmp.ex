defmodule Micelio.Storage.Test.Tmp do
  @moduledoc false
  # A fresh directory per test, under a directory of this test run
  # (`<tmp>/micelio_storage_test/run-<OS pid>`), removed when the VM exits.
  # The first use also removes what runs that are gone left behind: run
  # directories whose process no longer exists, and entries of the older
  # flat layout not touched for a day.

  @root Path.join(System.tmp_dir!(), "micelio_storage_test")
  @day_s 86_400

  def dir!(tag) do
    path = Path.join(run_root(), "#{tag}-#{System.unique_integer([:positive])}")
    File.rm_rf!(path)
    File.mkdir_p!(path)
    path
  end

  defp run_root do
    case :persistent_term.get({__MODULE__, :root}, nil) do
      nil -> start_run()
      root -> root
    end
  end

  defp start_run do
    :global.trans({__MODULE__, :start}, fn ->
      case :persistent_term.get({__MODULE__, :root}, nil) do
        nil ->
          sweep()
          root = Path.join(@root, "run-#{System.pid()}")
          File.mkdir_p!(root)
          System.at_exit(fn _ -> File.rm_rf(root) end)
          :persistent_term.put({__MODULE__, :root}, root)
          root

        root ->
          root
      end
    end)
  end

  defp sweep do
    now = System.os_time(:second)

    Enum.each(File.ls!(@root), fn name ->
      path = Path.join(@root, name)

      case name do
        "run-" <> pid -> unless alive?(pid), do: File.rm_rf(path)
        _flat -> if old?(path, now), do: File.rm_rf(path)
      end
    end)
  rescue
    # No root yet: nothing to sweep.
    File.Error -> :ok
  end

  defp alive?(pid), do: pid =~ ~r/^\d+$/ and File.exists?("/proc/#{pid}")

  defp old?(path, now) do
    case File.lstat(path, time: :posix) do
      {:ok, %{mtime: mtime}} -> now - mtime > @day_s
      _ -> false
    end
  end
end
