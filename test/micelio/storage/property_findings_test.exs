defmodule Micelio.Storage.PropertyFindingsTest do
  # Plain regression tests for what the model-based properties found
  # (test/micelio/storage/model_properties_test.exs), each with the minimal
  # sequence the property shrank to.
  use ExUnit.Case, async: true

  alias Micelio.Storage
  alias Micelio.Storage.Test.{Seaweed, Tmp}

  @moduletag :s3

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  defp backends do
    [
      memory: [backend: :memory, memory_name: "findings-#{System.unique_integer([:positive])}"],
      local: [local_path: Tmp.dir!("findings")],
      s3: Seaweed.opts()
    ]
  end

  # [{:put, "a/a/a", ""}, {:copy, "a/a/a", "a/a/a"}]: S3 answered 400
  # InvalidRequest (it refuses an unchanged copy onto itself).
  test "copying a key onto itself succeeds, as on every backend" do
    for {name, o} <- backends() do
      {:ok, _} = Storage.put("a/a/a", "same", [content_type: "text/plain"] ++ o)
      assert Storage.copy("a/a/a", "a/a/a", o) == {:ok, "a/a/a"}, "#{name}"
      assert Storage.get("a/a/a", o) == {:ok, "same"}
      assert {:ok, %{content_type: "text/plain"}} = Storage.head("a/a/a", o)
      assert Storage.copy("missing", "missing", o) == {:error, :not_found}, "#{name}"
    end
  end

  # [{:put, "b", ""}, {:delete, "b"}, {:list_with_delimiter, ""}]: S3 on
  # SeaweedFS listed the store's emptied prefix as a key "" (a folder
  # marker), a key every call rejects.
  test "a listing never hands out a folder marker as a key" do
    for {name, o} <- backends() do
      {:ok, _} = Storage.put("b", "x", o)
      {:ok, _} = Storage.delete("b", o)
      assert {:ok, %{keys: []}} = Storage.list_with_delimiter("", o), "#{name}"
      assert Storage.list("", o) == {:ok, []}, "#{name}"
      assert Enum.to_list(Storage.stream_keys("", o)) == [], "#{name}"
    end
  end

  # [{:put, "a", ...}, {:put_if_match, "a/a", _, :wrong}]: local answered
  # {:io, :enotdir}; a key that cannot exist fails the ETag condition.
  test "put_if_match on a key under a file is :precondition_failed on local" do
    o = [local_path: Tmp.dir!("findings-cas")]
    {:ok, _} = Storage.put("a", "file", o)
    assert Storage.put_if_match("a/a", "x", "0123", o) == {:error, :precondition_failed}
    refute File.exists?(Path.join(o[:local_path], "a/a"))
  end

  # [{:put, "a", "", metadata: %{"owner" => ""}}, {:head, "a"}]: S3
  # dropped the empty value that local kept. Every backend refuses it now.
  test "metadata values that S3 headers would lose are refused on every backend" do
    for {name, o} <- backends(), value <- ["", " padded", "padded "] do
      assert {:error, {:invalid_config, :metadata, _}} =
               Storage.put("m", "x", [metadata: %{"owner" => value}] ++ o),
             "#{name} #{inspect(value)}"
    end
  end

  # [{:put_if_match, "a/a", _, :wrong}, {:put_stream, "a", ...}]: the failed
  # conditional put left the directory "a" behind, and local refused the key
  # "a" with {:io, :eisdir}. A failed put leaves no directory.
  test "a failed put leaves no directory behind on local" do
    o = [local_path: Tmp.dir!("findings-dirs")]
    assert Storage.put_if_match("a/a", "x", "0123", o) == {:error, :precondition_failed}

    assert Storage.put_stream("b/c/d", Stream.map([1], fn _ -> raise "boom" end), o)
           |> catch_error()

    assert File.ls!(o[:local_path]) == []
    assert {:ok, "a"} = Storage.put("a", "x", o)
    assert {:ok, "b"} = Storage.put("b", "x", o)
  end

  # [{:put_stream, "*/h", ...}, {:put_if_none_match, "*", ...}]: local said
  # :precondition_failed ("the key exists") for a name held by a directory,
  # where get says :not_found and put says {:io, :eisdir}.
  test "put_if_none_match on a name held by a directory is {:io, :eisdir} on local, like put" do
    o = [local_path: Tmp.dir!("findings-dir-name")]
    {:ok, _} = Storage.put("d/h", "x", o)
    assert Storage.put("d", "y", o) == {:error, {:io, :eisdir}}
    assert Storage.put_if_none_match("d", "y", o) == {:error, {:io, :eisdir}}
    {:ok, _} = Storage.put("f", "x", o)
    assert Storage.put_if_none_match("f", "y", o) == {:error, :precondition_failed}
  end
end
