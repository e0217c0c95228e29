defmodule Micelio.Storage.Handle do
  @moduledoc """
  A resolved configuration with its built store, from `Micelio.Storage.open/1`.

  Every `Micelio.Storage` function accepts a handle in place of its options.
  The configuration is then not resolved again on each call, which matters
  on hot paths such as RAM-cache hits (resolving reads the application
  config and environment variables). A handle does not see later changes
  to the configuration; open a new one for that. Its `config` holds the
  resolved settings without the secret ones.

      {:ok, storage} = Micelio.Storage.open(backend: :tiered)
      {:ok, content} = Micelio.Storage.get("avatars/1.png", storage)
  """
  @derive {Inspect, only: [:backend, :name]}
  @enforce_keys [:backend, :store, :mode, :config]
  defstruct @enforce_keys ++ [name: Micelio.Storage]

  @type t :: %__MODULE__{
          backend: :local | :s3 | :tiered,
          store: reference(),
          mode: :blocking | :async | :cached,
          name: module(),
          config: Micelio.Storage.Config.t()
        }
end
