defmodule Micelio.Storage.Migration do
  @moduledoc """
  Copies every object under a prefix from one store to another, as
  `mix micelio.storage.migrate` does (see its docs for the command line).

  Objects stream through a temp file, never through memory whole. A copy
  carries the source's content type, headers and metadata, plus its SHA-256
  as the `sha256` metadata entry, so a later run skips keys whose size and
  content hash already match at the target (a killed run resumes with what
  is missing). `verify: true` reads each copy back and compares hashes.

      {:ok, summary} =
        Micelio.Storage.Migration.run(from_handle, to_handle, prefix: "artifacts/", concurrency: 8)
      summary.failed   # [{key, reason}]
  """

  alias Micelio.Storage

  @typedoc "What a run did."
  @type summary :: %{
          copied: non_neg_integer(),
          skipped: non_neg_integer(),
          bytes: non_neg_integer(),
          failed: [{String.t(), term()}]
        }

  @doc """
  Runs a migration between two handles (or option lists). Options:
  `:prefix` (default `""`), `:concurrency` (default 4), `:dry_run`,
  `:verify`, and `:report` - a function called with
  `{:object, key, :copied | :skipped | :would_copy | {:failed, reason}, bytes}`
  after each object.
  """
  @spec run(Storage.Handle.t() | keyword(), Storage.Handle.t() | keyword(), keyword()) ::
          {:ok, summary()} | {:error, term()}
  def run(from, to, opts \\ []) do
    prefix = Keyword.get(opts, :prefix, "")
    report = Keyword.get(opts, :report, fn _ -> :ok end)

    with {:ok, from} <- Storage.open(from),
         {:ok, to} <- Storage.open(to),
         {:ok, tmp} <- private_temp_dir() do
      try do
        summary =
          Storage.stream_keys(prefix, from)
          |> Task.async_stream(&copy(&1, from, to, tmp, opts),
            max_concurrency: Keyword.get(opts, :concurrency, 4),
            ordered: false,
            timeout: :infinity
          )
          |> Enum.reduce(%{copied: 0, skipped: 0, bytes: 0, failed: []}, fn {:ok,
                                                                             {key, outcome, bytes}},
                                                                            acc ->
            report.({:object, key, outcome, bytes})
            tally(acc, key, outcome, bytes)
          end)

        {:ok, %{summary | failed: Enum.sort(summary.failed)}}
      rescue
        e in Storage.Error -> {:error, e.reason}
      after
        File.rm_rf(tmp)
      end
    end
  end

  # Objects in transit go through a directory only we can enter: a random
  # name, created with mkdir (which fails on anything already there, a
  # planted symlink included, and never follows one), then mode 0700 before
  # anything is written in it.
  defp private_temp_dir(attempts \\ 5) do
    name = "micelio-migrate-" <> Base.url_encode64(:crypto.strong_rand_bytes(12), padding: false)
    dir = Path.join(System.tmp_dir!(), name)

    case :file.make_dir(dir) do
      :ok ->
        case File.chmod(dir, 0o700) do
          :ok ->
            {:ok, dir}

          {:error, posix} ->
            File.rmdir(dir)
            {:error, {:io, posix}}
        end

      {:error, :eexist} when attempts > 1 ->
        private_temp_dir(attempts - 1)

      {:error, posix} ->
        {:error, {:io, posix}}
    end
  end

  defp tally(acc, _key, :copied, bytes),
    do: %{acc | copied: acc.copied + 1, bytes: acc.bytes + bytes}

  defp tally(acc, _key, :would_copy, bytes),
    do: %{acc | copied: acc.copied + 1, bytes: acc.bytes + bytes}

  defp tally(acc, _key, :skipped, _bytes), do: %{acc | skipped: acc.skipped + 1}

  defp tally(acc, key, {:failed, reason}, _bytes),
    do: %{acc | failed: [{key, reason} | acc.failed]}

  defp copy(key, from, to, tmp, opts) do
    path = Path.join(tmp, Base.url_encode64(:crypto.strong_rand_bytes(12)))

    result =
      with {:ok, meta} <- Storage.head(key, from),
           {:ok, :copy} <- needed(key, meta, from, to) do
        if opts[:dry_run] do
          {:would_copy, meta.size}
        else
          transfer(key, meta, from, to, path, opts)
        end
      else
        {:ok, :skip} -> {:skipped, 0}
        {:error, reason} -> {{:failed, reason}, 0}
      end

    File.rm(path)
    {outcome, bytes} = result
    {key, outcome, bytes}
  end

  # Copy unless the target holds the same size and content hash.
  defp needed(key, meta, from, to) do
    case Storage.head(key, to) do
      {:ok, %{size: size, metadata: %{"sha256" => hash}}} when size == meta.size ->
        case stream_hash(key, from) do
          {:ok, ^hash} -> {:ok, :skip}
          {:ok, _other} -> {:ok, :copy}
          error -> error
        end

      {:ok, _} ->
        {:ok, :copy}

      {:error, :not_found} ->
        {:ok, :copy}

      {:error, _} = error ->
        error
    end
  end

  defp transfer(key, meta, from, to, path, opts) do
    with {:ok, _} <- Storage.get_file(key, path, from),
         {:ok, hash} <- file_hash(path),
         object = [
           content_type: meta.content_type,
           cache_control: meta.cache_control,
           content_disposition: meta.content_disposition,
           content_encoding: meta.content_encoding,
           metadata: Map.put(meta.metadata, "sha256", hash),
           storage: to
         ],
         {:ok, _} <- Storage.put_file(key, path, Enum.reject(object, &match?({_, nil}, &1))),
         :ok <- verify(key, hash, to, opts) do
      {:copied, meta.size}
    else
      {:error, reason} -> {{:failed, reason}, 0}
    end
  end

  defp verify(key, hash, to, opts) do
    if opts[:verify] do
      case stream_hash(key, to) do
        {:ok, ^hash} -> :ok
        {:ok, other} -> {:error, {:verify_mismatch, hash, other}}
        error -> error
      end
    else
      :ok
    end
  end

  defp stream_hash(key, handle) do
    hash =
      Storage.stream(key, handle)
      |> Enum.reduce(:crypto.hash_init(:sha256), &:crypto.hash_update(&2, &1))
      |> :crypto.hash_final()

    {:ok, Base.encode16(hash, case: :lower)}
  rescue
    e in Storage.Error -> {:error, e.reason}
  end

  defp file_hash(path) do
    hash =
      File.stream!(path, [], 1_048_576)
      |> Enum.reduce(:crypto.hash_init(:sha256), &:crypto.hash_update(&2, &1))
      |> :crypto.hash_final()

    {:ok, Base.encode16(hash, case: :lower)}
  rescue
    e in File.Error -> {:error, {:io, e.reason}}
  end
end
