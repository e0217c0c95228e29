# A short tour of Micelio.Storage on the default local backend.
# Run it with: bin/demo   (or: mix run examples/demo.exs)
alias Micelio.Storage

root = Path.join(System.tmp_dir!(), "micelio_storage_demo")
File.rm_rf!(root)
opts = [local_path: root]
say = fn line -> IO.puts("  " <> line) end

IO.puts("Micelio.Storage demo: local backend rooted at #{root}\n")

files = %{
  "sessions/abc123/files/lib/app.ex" => "defmodule App, do: def hello, do: :world\n",
  "sessions/abc123/files/README.md" => "# A session\n",
  "sessions/abc123/metadata.json" => ~s({"author":"ana"}\n)
}

for {key, content} <- Enum.sort(files) do
  {:ok, ^key} = Storage.put(key, content, opts)
  say.("put    #{key} (#{byte_size(content)} bytes)")
end

{:ok, keys} = Storage.list("sessions/abc123/", opts)
say.("list   sessions/abc123/ -> #{inspect(keys)}")

for key <- keys do
  {:ok, content} = Storage.get(key, opts)
  true = content == files[key]
  say.("get    #{key} -> #{inspect(content)}")
end

{:ok, meta} = Storage.head("sessions/abc123/metadata.json", opts)
say.("head   sessions/abc123/metadata.json -> size #{meta.size}, etag #{meta.etag}")

{:ok, _} = Storage.put_if_none_match("sessions/abc123/lock", "worker-1", opts)

{:error, :precondition_failed} =
  Storage.put_if_none_match("sessions/abc123/lock", "worker-2", opts)

say.("lock   sessions/abc123/lock taken once; a second taker got :precondition_failed")

{:error, {:invalid_key, _}} = Storage.put("../outside", "nope", opts)
say.("reject ../outside -> {:error, {:invalid_key, \"../outside\"}}")

for key <- keys ++ ["sessions/abc123/lock"] do
  {:ok, ^key} = Storage.delete(key, opts)
  say.("delete #{key}")
end

{:ok, []} = Storage.list("sessions/", opts)
false = Storage.exists?("sessions/abc123/README.md", opts)

say.(
  "list   sessions/ -> [] (everything deleted, empty directories pruned: #{inspect(File.ls!(root))})"
)

IO.puts("\ndone.")
