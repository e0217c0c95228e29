defmodule Micelio.Storage.Backend do
  @moduledoc false
  # The contract each backend module implements over its Rust store. Results
  # are already in the public shape, except metadata, which comes back as
  # `{size, etag, last_modified_ns}` and is turned into a map by the API.

  @type store :: reference()
  @type config :: Micelio.Storage.Config.t()
  @type condition :: :always | :if_none_match | {:if_match, String.t()}
  @type raw_meta :: {non_neg_integer(), String.t(), integer()}

  @callback open(config) :: {:ok, store} | {:error, term()}
  @callback get(store, String.t(), config) :: {:ok, binary()} | {:error, term()}
  @callback get_with_meta(store, String.t(), config) ::
              {:ok, binary(), raw_meta} | {:error, term()}
  @callback head(store, String.t(), config) :: {:ok, raw_meta} | {:error, term()}
  @callback put(store, String.t(), iodata(), condition, config) :: :ok | {:error, term()}
  @callback delete(store, String.t(), config) :: :ok | {:error, term()}
  @callback list(store, String.t(), config) :: {:ok, [String.t()]} | {:error, term()}

  @doc "The module that implements `backend`."
  def module(:local), do: {:ok, Micelio.Storage.Local}
  def module(:s3), do: {:ok, Micelio.Storage.S3}

  def module(:tiered), do: {:ok, Micelio.Storage.Tiered}
end
