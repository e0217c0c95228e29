defmodule Micelio.Storage.LocalConformanceTest do
  use ExUnit.Case, async: true
  use Micelio.Storage.Conformance

  setup do
    {:ok, opts: [backend: :local, local_path: Micelio.Storage.Test.Tmp.dir!("conf-local")]}
  end
end
