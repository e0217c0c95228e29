defmodule Micelio.Storage.Test.Tmp do
  @moduledoc false
  # A fresh directory per test under the system temp dir.

  def dir!(tag) do
    name = "#{tag}-#{System.unique_integer([:positive])}"
    path = Path.join([System.tmp_dir!(), "micelio_storage_test", name])
    File.rm_rf!(path)
    File.mkdir_p!(path)
    path
  end
end
