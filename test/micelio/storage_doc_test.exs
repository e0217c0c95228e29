defmodule Micelio.StorageDocTest do
  # The examples in the docs use the application config, so this module
  # points it at a fresh directory and cannot run async.
  use ExUnit.Case, async: false

  setup do
    previous = Application.get_env(:micelio, Micelio.Storage)

    Application.put_env(:micelio, Micelio.Storage,
      local_path: Micelio.Storage.Test.Tmp.dir!("doc"),
      cache_disk_path: Micelio.Storage.Test.Tmp.dir!("doc-cache")
    )

    on_exit(fn ->
      if previous,
        do: Application.put_env(:micelio, Micelio.Storage, previous),
        else: Application.delete_env(:micelio, Micelio.Storage)
    end)
  end

  doctest Micelio.Storage
  doctest Micelio.Storage.Config
  doctest Micelio.Storage.Tiered
  doctest Micelio.Storage.Settings
  doctest Micelio.Storage.Error
  doctest Micelio.Storage.S3, only: [prepare_settings: 1]
end
