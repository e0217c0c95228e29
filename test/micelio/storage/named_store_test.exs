defmodule Micelio.Storage.NamedStoreTest do
  # Store modules defined with `use Micelio.Storage`, started under a
  # supervisor like an Ecto repo. Touches the application env: not async.
  use ExUnit.Case, async: false

  alias Micelio.Storage.Test.Tmp

  defmodule Sessions do
    use Micelio.Storage, otp_app: :micelio_named_test
  end

  defmodule Artifacts do
    use Micelio.Storage, otp_app: :micelio_named_test

    # Runtime configuration, as an Ecto repo's init/2.
    @impl true
    def init(_context, config) do
      {:ok, Keyword.put_new(config, :memory_max_bytes, 10_000_000)}
    end
  end

  setup do
    root = Tmp.dir!("named")
    Application.put_env(:micelio_named_test, Sessions, backend: :local, local_path: root)
    Application.put_env(:micelio_named_test, Artifacts, backend: :memory)

    on_exit(fn ->
      Application.delete_env(:micelio_named_test, Sessions)
      Application.delete_env(:micelio_named_test, Artifacts)
    end)

    {:ok, root: root}
  end

  test "a store module has the whole API and reads its own app config", %{root: root} do
    assert {:ok, "a.txt"} = Sessions.put("a.txt", "hello")
    assert File.read!(Path.join(root, "a.txt")) == "hello"
    assert {:ok, "hello"} = Sessions.get("a.txt")
    assert Sessions.get!("a.txt") == "hello"
    assert Sessions.exists?("a.txt")
    assert {:ok, %{size: 5, etag: etag}} = Sessions.head("a.txt")
    assert {:ok, _} = Sessions.put_if_match("a.txt", "v2", etag)
    assert {:error, :precondition_failed} = Sessions.put_if_none_match("a.txt", "v3")
    assert {:ok, %{content: "v2"}} = Sessions.get_with_metadata("a.txt")
    assert {:ok, "b.txt"} = Sessions.copy("a.txt", "b.txt")
    assert {:ok, ["a.txt", "b.txt"]} = Sessions.list()
    assert {:ok, ["a.txt", "b.txt"]} = Sessions.delete_many(["a.txt", "b.txt"])
    assert Sessions.list!("") == []
    assert :ok = Sessions.health()
    assert {:ok, %{backend: :local, name: Sessions}} = Sessions.open()
    assert {:error, {:invalid_config, :backend, _}} = Sessions.stats()
  end

  test "store modules take the large-object, listing and per-object options too", %{root: root} do
    assert {:ok, "d/page.html"} =
             Sessions.put("d/page.html", "<p>", content_type: "text/html", metadata: %{"a" => "b"})

    assert {:ok, %{content_type: "text/html", metadata: %{"a" => "b"}}} =
             Sessions.head("d/page.html")

    assert {:ok, "<p"} = Sessions.get("d/page.html", range: {0, 2})
    src = Path.join(Tmp.dir!("named-src"), "f")
    File.write!(src, "file body")
    assert {:ok, "d/f"} = Sessions.put_file("d/f", src, progress: fn _, _ -> :ok end)
    assert {:ok, "d/s"} = Sessions.put_stream("d/s", ["a", "b"])
    out = Path.join(Tmp.dir!("named-out"), "f")
    assert {:ok, %{size: 9}} = Sessions.get_file("d/f", out)
    assert Sessions.stream("d/s") |> Enum.join() == "ab"

    assert {:ok, %{keys: ["d/f", "d/page.html", "d/s"], prefixes: []}} =
             Sessions.list_with_delimiter("d/")

    assert Sessions.stream_keys("d/", page_size: 1) |> Enum.to_list() == [
             "d/f",
             "d/page.html",
             "d/s"
           ]

    assert {:ok, "cas/sha256:" <> _} = Sessions.put_content_addressed("x", prefix: "cas/")
    assert {:error, :precondition_failed} = Sessions.copy("d/f", "d/s", if_absent: true)
    assert {:ok, "d/copy"} = Sessions.copy("d/f", "d/copy", if_absent: true)
    assert Sessions.copy!("d/f", "d/copy2", if_absent: true) == "d/copy2"
    assert {:error, {:invalid_config, :backend, _}} = Sessions.public_url("d/f")
    assert File.read!(Path.join(root, "d/s")) == "ab"
  end

  test "several stores, each with its own backend, never see each other's objects" do
    Sessions.put!("k", "on disk")
    Artifacts.put!("k", "in memory")
    assert Sessions.get!("k") == "on disk"
    assert Artifacts.get!("k") == "in memory"
    assert {:error, :not_found} = Micelio.Storage.get("k", backend: :memory)
    assert {:ok, config} = Artifacts.config()
    assert config[:memory_max_bytes] == 10_000_000
  end

  test "the :micelio config does not leak into a store module", %{root: root} do
    previous = Application.get_env(:micelio, Micelio.Storage)
    Application.put_env(:micelio, Micelio.Storage, local_path: Tmp.dir!("other"), timeout: 1)

    try do
      Sessions.put!("mine", "x")
      assert File.exists?(Path.join(root, "mine"))
      {:ok, h} = Sessions.open()
      assert h.config.timeout == 30_000
    after
      if previous,
        do: Application.put_env(:micelio, Micelio.Storage, previous),
        else: Application.delete_env(:micelio, Micelio.Storage)
    end
  end

  test "started in a supervision tree, the store is built at boot", %{root: root} do
    start_supervised!({Sessions, []})
    Sessions.put!("boot", "built")
    assert File.read!(Path.join(root, "boot")) == "built"
    # The boot config holds: a later change takes effect after a restart.
    Application.put_env(:micelio_named_test, Sessions, backend: :local, local_path: Tmp.dir!("x"))
    Sessions.put!("boot2", "same store")
    assert File.exists?(Path.join(root, "boot2"))
    # Per-call options still override.
    other = Tmp.dir!("override")
    Sessions.put!("o", "v", local_path: other)
    assert File.exists?(Path.join(other, "o"))
  end

  test "invalid configuration fails the boot, naming the setting" do
    Application.put_env(:micelio_named_test, Sessions, backend: :local, timeout: -5)

    assert {:error, {{:invalid_config, :timeout, message}, _}} = start_supervised({Sessions, []})

    assert message =~ "config :micelio_named_test, Micelio.Storage.NamedStoreTest.Sessions"

    Application.put_env(:micelio_named_test, Sessions, backend: :s3)

    assert {:error, {{:invalid_config, :s3_bucket, message}, _}} =
             start_supervised({Sessions, []})

    assert message =~ "Micelio.Storage.NamedStoreTest.Sessions has no S3 bucket"
    assert message =~ "S3_BUCKET"
  end

  test "start options are merged into the config at boot" do
    dir = Tmp.dir!("start-opts")
    start_supervised!({Sessions, [local_path: dir]})
    Sessions.put!("s", "v")
    assert File.exists?(Path.join(dir, "s"))
  end

  test "every documented facade function exists on a store module, with the same arities" do
    {:docs_v1, _, _, _, _, _, docs} = Code.fetch_docs(Micelio.Storage)

    documented =
      for {{:function, name, arity}, _, _, doc, _} <- docs, doc != :hidden, do: {name, arity}

    # Global to the library, not to a store.
    documented = documented -- [reload: 0]
    exported = Sessions.__info__(:functions)
    missing = Enum.reject(documented, &(&1 in exported))
    assert missing == [], "store modules lack #{inspect(missing)}"
  end
end
