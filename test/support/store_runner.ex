defmodule Micelio.Storage.Test.StoreRunner do
  @moduledoc false
  # Runs a command sequence against a real store and the model, and checks
  # every result against the model's. Without faults every result must
  # equal the model's. With `faults: true` a call may also fail with one of
  # the documented reasons; a write that failed may or may not have landed,
  # and every read must still return bytes that some put wrote.
  import ExUnit.Assertions

  alias Micelio.Storage
  alias Micelio.Storage.Test.StoreModel, as: Model

  # The reasons a call may fail with when the server misbehaves.
  @fault_reasons [:timeout, :network, :s3_error, :changed, :checksum_mismatch]

  @doc """
  Runs `commands` on a fresh area of the store; returns the final model.
  `how`: `faults: true` (the server misbehaves), `paths: true` (keys are
  file paths: a key cannot also be the directory of another, as on
  local), `lingering_prefixes: true` (the server may list a prefix whose
  keys were all deleted for a while: SeaweedFS removes empty folders
  asynchronously).
  """
  def run!(commands, opts, how \\ []) do
    ctx = %{
      faults?: Keyword.get(how, :faults, false),
      paths?: Keyword.get(how, :paths, false),
      lingering?: Keyword.get(how, :lingering_prefixes, false)
    }

    Process.put(:store_runner_folders, MapSet.new())

    Enum.reduce(Enum.with_index(commands), Model.new(), fn {command, i}, model ->
      try do
        step(command, opts, model, ctx)
      rescue
        e in ExUnit.AssertionError ->
          reraise %{e | message: "command #{i + 1} #{describe(command)}: #{e.message}"},
                  __STACKTRACE__
      end
    end)
  end

  defp describe(command), do: inspect(command, limit: 8, printable_limit: 40)

  defp object(content, object_opts) do
    %{
      content: content,
      content_type: Keyword.get(object_opts, :content_type),
      metadata: Map.new(Keyword.get(object_opts, :metadata, %{}))
    }
  end

  # A write: succeeded (the model takes it), failed with a fault (maybe).
  defp write(result, expected, model, key, object, ctx) do
    conflict = ctx.paths? and Model.path_conflict(model, key)

    cond do
      conflict -> assert(result == {:error, {:io, conflict}}) && model
      result == expected -> remember_folders(key) && Model.put(model, key, object)
      ctx.faults? and fault?(result) -> Model.maybe(model, key, object)
      true -> flunk("expected #{inspect(expected)}, got #{inspect(result, limit: 5)}")
    end
  end

  defp fault?({:error, reason}) do
    kind = if is_tuple(reason), do: elem(reason, 0), else: reason
    kind in @fault_reasons
  end

  defp fault?(_), do: false

  # A read: the result must match one of the possible objects; the key
  # then holds the one it matched.
  defp read(result, model, key, ctx, to_result) do
    candidates = Model.possible(model, key)

    case Enum.find(candidates, &(to_result.(&1) == result)) do
      nil ->
        if ctx.faults? and fault?(result),
          do: model,
          else:
            flunk(
              "got #{inspect(result, limit: 5, printable_limit: 60)}, " <>
                "expected one of #{inspect(Enum.map(candidates, to_result), limit: 5, printable_limit: 60)}"
            )

      found ->
        Model.observed(model, key, found)
    end
  end

  defp step({:put, key, {content, iodata}, object_opts}, opts, model, ctx) do
    result = Storage.put(key, iodata, object_opts ++ opts)
    write(result, {:ok, key}, model, key, object(content, object_opts), ctx)
  end

  defp step({:put_stream, key, {content, {_shape, enumerable}}}, opts, model, ctx) do
    result = Storage.put_stream(key, enumerable, opts)
    write(result, {:ok, key}, model, key, object(content, []), ctx)
  end

  defp step({:put_file, key, content}, opts, model, ctx) do
    path = Path.join(Micelio.Storage.Test.Tmp.dir!("model-file"), "f")
    File.write!(path, content)
    result = Storage.put_file(key, path, opts)
    File.rm(path)
    write(result, {:ok, key}, model, key, object(content, []), ctx)
  end

  defp step({:get, key}, opts, model, ctx) do
    read(Storage.get(key, opts), model, key, ctx, fn
      :absent -> {:error, :not_found}
      o -> {:ok, o.content}
    end)
  end

  defp step({:get_range, key, range}, opts, model, ctx) do
    read(Storage.get(key, [range: range] ++ opts), model, key, ctx, fn
      :absent -> {:error, :not_found}
      o -> {:ok, Model.range(o.content, range)}
    end)
  end

  defp step({:head, key}, opts, model, ctx) do
    result =
      case Storage.head(key, opts) do
        {:ok, meta} -> {:ok, %{size: meta.size, metadata: meta.metadata, type: meta.content_type}}
        other -> other
      end

    # An object put without a content type may report any default.
    reported_type =
      case result do
        {:ok, %{type: type}} -> type
        _ -> nil
      end

    read(result, model, key, ctx, fn
      :absent ->
        {:error, :not_found}

      o ->
        {:ok,
         %{
           size: byte_size(o.content),
           metadata: o.metadata,
           type: o.content_type || reported_type
         }}
    end)
  end

  defp step({:get_with_metadata, key}, opts, model, ctx) do
    result =
      case Storage.get_with_metadata(key, opts) do
        {:ok, m} -> {:ok, {m.content, m.size}}
        other -> other
      end

    read(result, model, key, ctx, fn
      :absent -> {:error, :not_found}
      o -> {:ok, {o.content, byte_size(o.content)}}
    end)
  end

  defp step({:exists?, key}, opts, model, ctx) do
    result =
      try do
        Storage.exists?(key, opts)
      rescue
        e in Micelio.Storage.Error -> {:error, e.reason}
      end

    read(result, model, key, ctx, &(&1 != :absent))
  end

  defp step({:list, prefix}, opts, model, ctx) do
    listing(Storage.list(prefix, opts), model, ctx, fn -> {:ok, Model.list(model, prefix)} end)
  end

  defp step({:list_with_delimiter, prefix}, opts, model, ctx) do
    listing(Storage.list_with_delimiter(prefix, opts), model, ctx, fn ->
      {:ok, Model.list_level(model, prefix)}
    end)
  end

  defp step({:stream_keys, prefix}, opts, model, ctx) do
    result =
      try do
        {:ok, Storage.stream_keys(prefix, opts) |> Enum.sort()}
      rescue
        e in Micelio.Storage.Error -> {:error, e.reason}
      end

    listing(result, model, ctx, fn -> {:ok, Model.list(model, prefix)} end)
  end

  defp step({:copy, from, to}, opts, model, ctx) do
    result = Storage.copy(from, to, opts)

    case Model.certain(model, from) do
      :absent ->
        unless ctx.faults? and fault?(result), do: assert(result == {:error, :not_found})
        model

      :uncertain ->
        # Whatever the source held, the destination holds now (or it failed).
        case result do
          {:ok, ^to} ->
            Map.put(model, to, Enum.reject(Model.possible(model, from), &(&1 == :absent)))

          {:error, :not_found} ->
            Model.observed(model, from, :absent)

          other ->
            if ctx.faults? and fault?(other),
              do: uncertain_copy(model, from, to),
              else: flunk(inspect(other))
        end

      object ->
        write(result, {:ok, to}, model, to, object, ctx)
    end
  end

  defp step({:delete, key}, opts, model, ctx) do
    case Storage.delete(key, opts) do
      {:ok, ^key} ->
        Model.delete(model, key)

      other ->
        if ctx.faults? and fault?(other),
          do: Model.maybe(model, key, :absent),
          else: flunk(inspect(other))
    end
  end

  defp step({:delete_many, keys}, opts, model, ctx) do
    case Storage.delete_many(keys, opts) do
      {:ok, deleted} ->
        # Every key given is reported deleted, repeats included (the README
        # says "deleted_keys"; one entry per key given is what all backends do).
        assert Enum.sort(deleted) == Enum.sort(keys)
        Enum.reduce(keys, model, &Model.delete(&2, &1))

      other ->
        if ctx.faults? and (fault?(other) or match?({:error, {:partial, _, _}}, other)),
          do: Enum.reduce(keys, model, &Model.maybe(&2, &1, :absent)),
          else: flunk(inspect(other))
    end
  end

  defp step({:put_if_none_match, key, content}, opts, model, ctx) do
    result = Storage.put_if_none_match(key, content, opts)

    case Model.certain(model, key) do
      :absent ->
        # SeaweedFS keeps the folder of deleted keys for a while, and a
        # conditional put on that name sees it as existing.
        if ctx.lingering? and result == {:error, :precondition_failed} and was_folder?(key),
          do: model,
          else: write(result, {:ok, key}, model, key, object(content, []), ctx)

      :uncertain ->
        settle_conditional(result, model, key, object(content, []), ctx)

      _present ->
        assert_precondition(result, model, ctx)
    end
  end

  defp step({:put_if_match, key, content, which}, opts, model, ctx) do
    etag =
      case {which, Storage.head(key, opts)} do
        {:right, {:ok, %{etag: etag}}} -> etag
        _ -> "0123456789abcdef0123456789abcdef"
      end

    result = Storage.put_if_match(key, content, etag, opts)

    cond do
      Model.certain(model, key) == :uncertain ->
        settle_conditional(result, model, key, object(content, []), ctx)

      which == :right and Model.certain(model, key) != :absent ->
        # The head above may have failed under faults: then the tag is wrong.
        if ctx.faults? and result == {:error, :precondition_failed},
          do: model,
          else: write(result, {:ok, key}, model, key, object(content, []), ctx)

      true ->
        assert_precondition(result, model, ctx)
    end
  end

  defp step({:invalid, key}, opts, model, _ctx) do
    assert {:error, {:invalid_key, ^key}} = Storage.put(key, "x", opts)
    assert {:error, {:invalid_key, ^key}} = Storage.get(key, opts)
    model
  end

  # The folders every key written so far lives in ("a/b/c": "a", "a/b").
  defp remember_folders(key) do
    parts = String.split(key, "/")

    folders =
      for n <- 1..(length(parts) - 1)//1,
          into: Process.get(:store_runner_folders),
          do: Enum.join(Enum.take(parts, n), "/")

    Process.put(:store_runner_folders, folders)
  end

  defp was_folder?(key), do: MapSet.member?(Process.get(:store_runner_folders), key)

  defp assert_precondition(result, model, ctx) do
    unless ctx.faults? and fault?(result), do: assert(result == {:error, :precondition_failed})
    model
  end

  defp settle_conditional(result, model, key, object, ctx) do
    case result do
      {:ok, ^key} ->
        Model.put(model, key, object)

      {:error, :precondition_failed} ->
        model

      other ->
        if ctx.faults? and fault?(other),
          do: Model.maybe(model, key, object),
          else: flunk(inspect(other))
    end
  end

  defp uncertain_copy(model, from, to) do
    Enum.reduce(Model.possible(model, from), model, &Model.maybe(&2, to, &1))
  end

  # Listings are compared only when every key is certain; under faults a
  # failed listing is allowed.
  defp listing(result, model, ctx, expected) do
    cond do
      ctx.faults? and fault?(result) ->
        model

      Model.certain_keys?(model) ->
        assert(lingering_removed(result, model, ctx) == expected.()) && model

      true ->
        model
    end
  end

  # A prefix the server still lists although no key is under it: allowed
  # only where the server removes empty folders later (SeaweedFS).
  defp lingering_removed({:ok, %{prefixes: prefixes} = level}, model, %{lingering?: true}) do
    keys = Model.keys(model)
    kept = Enum.filter(prefixes, fn p -> Enum.any?(keys, &String.starts_with?(&1, p)) end)
    {:ok, %{level | prefixes: kept}}
  end

  defp lingering_removed(result, _model, _ctx), do: result
end
