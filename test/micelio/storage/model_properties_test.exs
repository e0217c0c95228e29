defmodule Micelio.Storage.ModelPropertiesTest do
  # The whole API against a pure model of the README (test/support/
  # store_model.ex), on every backend: random sequences of commands over
  # keys of the key grammar, each result compared with the model's. A
  # failure shrinks to a minimal sequence; the seed ExUnit prints replays it.
  use ExUnit.Case, async: true
  use ExUnitProperties

  alias Micelio.Storage.Test.{Seaweed, StoreGenerators, StoreRunner, Tmp}

  @moduletag :s3
  @moduletag timeout: 900_000

  # CI: 100 sequences of up to 30 commands per backend.
  @runs String.to_integer(System.get_env("MICELIO_PROPERTY_RUNS", "100"))
  @soak_runs String.to_integer(System.get_env("MICELIO_SOAK_RUNS", "2000"))

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  defp fresh(:memory),
    do: [backend: :memory, memory_name: "model-#{System.unique_integer([:positive])}"]

  defp fresh(:local), do: [local_path: Tmp.dir!("model-local")]

  defp fresh(:s3),
    do: Seaweed.opts(s3_multipart_threshold: 5_242_880, s3_part_size: 5_242_880)

  defp fresh(:tiered_local) do
    dir = Tmp.dir!("model-tiered")

    [
      backend: :tiered,
      origin_backend: :local,
      local_path: Path.join(dir, "origin"),
      cache_disk_path: Path.join(dir, "cache")
    ]
  end

  defp fresh(:tiered_s3) do
    fresh(:s3) ++
      [
        backend: :tiered,
        origin_backend: :s3,
        cache_disk_path: Tmp.dir!("model-tiered-s3")
      ]
  end

  # Where the README's model bends to a backend: keys that are file paths
  # on local (a key cannot also be another key's directory), and empty
  # folders that SeaweedFS lists until it removes them.
  defp how(backend) when backend in [:local, :tiered_local], do: [paths: true]
  defp how(backend) when backend in [:s3, :tiered_s3], do: [lingering_prefixes: true]
  defp how(:memory), do: []

  for backend <- [:memory, :local, :s3, :tiered_local, :tiered_s3] do
    @tag backend: backend
    property "#{backend}: every result equals the model's" do
      check all(commands <- StoreGenerators.commands(), max_runs: @runs) do
        StoreRunner.run!(commands, fresh(unquote(backend)), how(unquote(backend)))
      end
    end

    @tag :soak
    @tag backend: backend
    property "#{backend}: soak" do
      check all(commands <- StoreGenerators.commands(), max_runs: @soak_runs) do
        StoreRunner.run!(commands, fresh(unquote(backend)), how(unquote(backend)))
      end
    end
  end
end
