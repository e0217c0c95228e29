defmodule Micelio.Storage.Test.StoreModel do
  @moduledoc false
  # A pure model of a store, written from the README, not from the code:
  # a map of key => %{content, content_type, metadata}. `expect/2` says what
  # a command must return and `apply/3` how the store changes.
  #
  # Under faults a write that failed may or may not have landed, so a key
  # may hold one of several versions: each key maps to a list of possible
  # objects (`:absent` among them), collapsed to the one a read observes.

  @type object :: %{content: binary(), content_type: String.t() | nil, metadata: map()}
  @type t :: %{optional(String.t()) => [object() | :absent]}

  def new, do: %{}

  @doc "The possible objects at `key`."
  def possible(model, key), do: Map.get(model, key, [:absent])

  @doc "The one object at `key` when certain, `:uncertain` otherwise."
  def certain(model, key) do
    case possible(model, key) do
      [one] -> one
      _ -> :uncertain
    end
  end

  def keys(model) do
    for {k, versions} <- model, versions != [:absent], do: k
  end

  def certain_keys?(model), do: Enum.all?(model, fn {_, v} -> length(v) == 1 end)

  @doc "Sets `key` to `object` (a write that succeeded)."
  def put(model, key, object), do: Map.put(model, key, [object])

  @doc "Deletes `key`."
  def delete(model, key), do: Map.put(model, key, [:absent])

  @doc "A write whose outcome is unknown: `object` joins the possibilities."
  def maybe(model, key, object),
    do: Map.update(model, key, [:absent, object], &Enum.uniq(&1 ++ [object]))

  @doc "A read saw `object` (or `:absent`): the key holds it now."
  def observed(model, key, object), do: Map.put(model, key, [object])

  @doc "The bytes `range: {offset, length}` selects, as the README says."
  def range(content, {offset, length}) do
    size = byte_size(content)

    cond do
      offset >= size -> ""
      is_nil(length) -> binary_part(content, offset, size - offset)
      true -> binary_part(content, offset, min(length, size - offset))
    end
  end

  @doc """
  Where keys are file paths (local): `:enotdir` when a key is a parent
  directory of `key` (`"a"` for `"a/b"`), `:eisdir` when `key` is the
  directory of a key (`"a"` when `"a/b"` exists), `false` otherwise.
  """
  def path_conflict(model, key) do
    keys = keys(model)

    cond do
      Enum.any?(keys, &String.starts_with?(key, &1 <> "/")) -> :enotdir
      Enum.any?(keys, &String.starts_with?(&1, key <> "/")) -> :eisdir
      true -> false
    end
  end

  @doc "Keys under `prefix`, sorted (certain models only)."
  def list(model, prefix),
    do: model |> keys() |> Enum.filter(&String.starts_with?(&1, prefix)) |> Enum.sort()

  @doc "One level under `prefix`: keys and `/`-ended prefixes, sorted."
  def list_level(model, prefix) do
    under = list(model, prefix)

    {keys, prefixes} =
      Enum.reduce(under, {[], []}, fn key, {ks, ps} ->
        rest = binary_part(key, byte_size(prefix), byte_size(key) - byte_size(prefix))

        case :binary.split(rest, "/") do
          [_leaf] -> {[key | ks], ps}
          [dir, _] -> {ks, [prefix <> dir <> "/" | ps]}
        end
      end)

    %{keys: Enum.sort(keys), prefixes: prefixes |> Enum.uniq() |> Enum.sort()}
  end
end
