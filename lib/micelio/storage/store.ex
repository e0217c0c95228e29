defmodule Micelio.Storage.Store do
  @moduledoc false
  # The one call path from the API to a built store, for every backend.
  #
  # `open/1` turns resolved settings into a store in Rust (built once per
  # settings, kept in `Micelio.Storage.Stores`) and a handle. Operations are
  # tuples (see native/micelio_storage/src/nif/operation.rs) run by one of
  # three NIFs, by the store's mode:
  #
  #   * `:blocking` (local) - on a dirty I/O scheduler, answered directly;
  #   * `:async` (S3) - on the tokio runtime, answered by message;
  #   * `:cached` (tiered) - like `:async`, but a `get` first tries the RAM
  #     tier inline and then the disk tier on a dirty scheduler.

  alias Micelio.Storage.{Async, Handle, Native, Operation, S3, Secret, Settings, Stores}

  @doc """
  Builds (or reuses) the store of a resolved config, as a handle. With
  `cache: false` the store is not kept in the store cache (it is freed with
  the last handle).
  """
  @spec open(map(), keyword()) :: {:ok, Handle.t()} | {:error, term()}
  def open(config, opts \\ []) do
    with {:ok, settings} <- engine_settings(config) do
      backend = Atom.to_string(config.backend)
      spec = {backend, Enum.map(settings, &redact/1)}
      build = fn -> build(backend, settings) end
      built = if Keyword.get(opts, :cache, true), do: Stores.fetch(spec, build), else: build.()

      with {:ok, {store, mode}} <- built do
        {:ok,
         %Handle{
           backend: config.backend,
           store: store,
           mode: mode,
           # Handles are cached and may be inspected: no secret in them.
           config: Map.drop(config, Settings.secrets())
         }}
      end
    end
  end

  defp build(backend, settings) do
    case Native.store_open(backend, settings) do
      {:ok, store, :cached} ->
        # Tiered caches over one origin keep each other coherent.
        :ok = Micelio.Storage.Coherence.watch(store, origin_id(settings))
        {:ok, {store, :cached}}

      {:ok, store, mode} ->
        {:ok, {store, mode}}

      error ->
        error
    end
  end

  # What identifies the origin of a tiered store: where its data lives,
  # not how it is reached (credentials differ between nodes).
  @origin_identity ~w(origin_backend local_path s3_endpoint s3_region s3_bucket s3_prefix)
  defp origin_id(settings) do
    identity = for {name, value} <- settings, name in @origin_identity, do: {name, value}
    :crypto.hash(:sha256, :erlang.term_to_binary(Enum.sort(identity))) |> Base.encode16()
  end

  # The settings of the backend's groups, as the engine reads them:
  # enums as strings, secrets unwrapped.
  defp engine_settings(config) do
    groups = Settings.groups(config.backend, config[:origin_backend])
    names = Settings.in_groups(groups)

    with {:ok, config} <- prepare(groups, config) do
      {:ok, Enum.map(names, fn name -> {Atom.to_string(name), engine_value(config[name])} end)}
    end
  end

  # Backends whose settings need a step before the engine reads them (S3:
  # the shared-files profile and the credential source), by settings group.
  @prepares %{s3: S3}

  defp prepare(groups, config) do
    Enum.reduce_while(groups, {:ok, config}, fn group, {:ok, config} ->
      case Map.fetch(@prepares, group) do
        {:ok, module} ->
          case module.prepare_settings(config) do
            {:ok, config} -> {:cont, {:ok, config}}
            error -> {:halt, error}
          end

        :error ->
          {:cont, {:ok, config}}
      end
    end)
  end

  defp engine_value(%Secret{} = secret), do: Secret.unwrap(secret)
  defp engine_value(value) when is_boolean(value) or is_nil(value), do: value
  defp engine_value(value) when is_atom(value), do: Atom.to_string(value)
  defp engine_value(value), do: value

  # The store cache never holds a secret: only its digest.
  defp redact({name, value}) when is_binary(value) do
    if Settings.secret?(String.to_existing_atom(name)),
      do: {name, :crypto.hash(:sha256, value)},
      else: {name, value}
  end

  defp redact(pair), do: pair

  @doc "Runs an operation (built by `Micelio.Storage.Operation`) on the store of `handle`."
  @spec run(Handle.t(), Micelio.Storage.Operation.t()) :: term()
  def run(%Handle{mode: :blocking, store: store, config: %{timeout: t}}, op),
    do: Native.store_run_dirty(store, op, t)

  def run(%Handle{store: store, config: %{timeout: t}}, op),
    do: Async.call(t, &Native.store_run(store, &1, op, t))

  @doc """
  Reads `key`: `{:ok, bin}`, or `{:ok, bin, meta}` when `with_meta`. A
  tiered read that misses RAM goes on with `below` (default `below_ram/3`).
  """
  @spec get(Handle.t(), binary(), boolean(), (Handle.t(), binary(), boolean() -> term())) ::
          term()
  def get(handle, key, with_meta, below \\ &below_ram/3)

  def get(%Handle{mode: :cached, store: store} = handle, key, with_meta, below) do
    case Native.store_get_cached(store, key, with_meta) do
      :miss -> below.(handle, key, with_meta)
      hit_or_error -> hit_or_error
    end
  end

  def get(handle, key, with_meta, _below), do: run(handle, Operation.get(key, with_meta))

  @doc "A tiered read after a RAM miss: the disk tier, then the CDN or origin."
  @spec below_ram(Handle.t(), binary(), boolean()) :: term()
  def below_ram(%Handle{store: store} = handle, key, with_meta) do
    with :miss <- Native.store_get_disk(store, key, with_meta),
         do: run(handle, Operation.get(key, with_meta))
  end
end
