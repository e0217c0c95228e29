defmodule Micelio.Storage.Presign do
  @moduledoc false
  # Presigned URLs: the options that shape the URL split from those that
  # pick the store, checked, then signed by the engine (on its runtime, as
  # temporary credentials may need fetching).

  alias Micelio.Storage.{Handle, Lookup, Operation, Store, Telemetry}

  @doc false
  # `{presigning options, storage options}` (for store modules too).
  def split_options(opts) when is_list(opts) do
    if Keyword.keyword?(opts), do: split_keyword(opts), else: {[], opts}
  end

  def split_options(opts), do: {[], opts}

  defp split_keyword(opts),
    do:
      Keyword.split(opts, [
        :method,
        :expires_in,
        :datetime,
        :content_type,
        :response_content_type,
        :response_content_disposition
      ])

  @doc false
  # The URL for `key`; `opts` is a keyword list.
  def url(key, opts) do
    {presign, storage_opts} = split_options(opts)
    expires_in = Keyword.get(presign, :expires_in, 3600)

    storage = signing_handle(storage_opts)

    with {:ok, method} <- presign_method(Keyword.get(presign, :method, :get)),
         :ok <- check_expiry(expires_in),
         {:ok, handle} <- storage,
         {:ok, unix} <- presign_time(Keyword.get(presign, :datetime)) do
      # Runs on the I/O runtime: temporary credentials may need fetching.
      Telemetry.observe(:presigned_url, key, handle, fn ->
        headers =
          Keyword.take(presign, [
            :content_type,
            :response_content_type,
            :response_content_disposition
          ])

        Store.run(handle, Operation.presigned_url(key, method, expires_in, unix, headers))
      end)
    end
  end

  # No :datetime: the engine signs with now on the server's clock (it
  # corrects a skew the server told it of).
  defp presign_time(nil), do: {:ok, nil}
  defp presign_time(datetime), do: Micelio.Storage.S3.unix_time(datetime)

  defp presign_method(m) when m in [:get, :put, :head, :delete],
    do: {:ok, m |> Atom.to_string() |> String.upcase()}

  defp presign_method(m),
    do:
      {:error,
       {:invalid_config, :method, "expected :get, :put, :head or :delete, got #{inspect(m)}"}}

  defp check_expiry(s) when is_integer(s) and s in 1..604_800, do: :ok

  defp check_expiry(s),
    do: {:error, {:invalid_config, :expires_in, "expected 1..604800 seconds, got #{inspect(s)}"}}

  @doc false
  # The reason for options that are a list but not a keyword list.
  def not_keyword(opts) do
    got =
      if Micelio.Storage.Config.proper_list?(opts),
        do: "a list with other entries",
        else: "an improper list"

    {:invalid_config, :options, "expected a keyword list, got #{got}"}
  end

  @post_options [
    :content_length_range,
    :content_type,
    :content_type_starts_with,
    :key_starts_with,
    :expires_in,
    :success_action_status,
    :metadata,
    :cache_control,
    :datetime
  ]

  @doc false
  # `{POST policy options, storage options}` (for store modules too).
  def split_post_options(opts) when is_list(opts) do
    if Keyword.keyword?(opts), do: Keyword.split(opts, @post_options), else: {[], opts}
  end

  def split_post_options(opts), do: {[], opts}

  @doc false
  # The form's URL and fields for an upload to `key_or_prefix`.
  def post(key_or_prefix, opts) do
    {post, storage_opts} = split_post_options(opts)

    storage = signing_handle(storage_opts)

    with {:ok, conditions} <- post_conditions(post),
         {:ok, handle} <- storage do
      Telemetry.observe(:presigned_post, key_or_prefix, handle, fn ->
        Store.run(handle, Operation.presigned_post(key_or_prefix, conditions))
      end)
    end
  end

  defp post_conditions(post) do
    expires_in = Keyword.get(post, :expires_in, 3600)

    with :ok <- check_expiry(expires_in),
         {:ok, range} <- length_range(post[:content_length_range]),
         {:ok, type, type_prefix} <-
           content_type(post[:content_type], post[:content_type_starts_with]),
         {:ok, starts_with?} <-
           flag(:key_starts_with, Keyword.get(post, :key_starts_with, false)),
         {:ok, status} <- action_status(post[:success_action_status]),
         {:ok, metadata} <- metadata(Keyword.get(post, :metadata, %{})),
         {:ok, cache_control} <- optional_text(:cache_control, post[:cache_control]),
         {:ok, unix} <- presign_time(post[:datetime]) do
      {:ok,
       %{
         key_starts_with: starts_with?,
         content_length_range: range,
         content_type: type,
         content_type_starts_with: type_prefix,
         success_action_status: status,
         metadata: metadata,
         cache_control: cache_control,
         expires_in: expires_in,
         unix_time: unix
       }}
    end
  end

  defp length_range(nil), do: {:ok, nil}

  defp length_range({min, max} = range)
       when is_integer(min) and is_integer(max) and min >= 0 and max >= min,
       do: {:ok, range}

  defp length_range(other),
    do:
      {:error,
       {:invalid_config, :content_length_range,
        "expected {min, max} byte counts with 0 <= min <= max, got #{inspect(other)}"}}

  defp content_type(type, prefix) when is_binary(type) and is_binary(prefix),
    do:
      {:error,
       {:invalid_config, :content_type,
        "give :content_type (exact) or :content_type_starts_with, not both"}}

  defp content_type(type, prefix) do
    with {:ok, type} <- optional_text(:content_type, type),
         {:ok, prefix} <- optional_text(:content_type_starts_with, prefix),
         do: {:ok, type, prefix}
  end

  defp flag(_name, value) when is_boolean(value), do: {:ok, value}

  defp flag(name, value),
    do: {:error, {:invalid_config, name, "expected a boolean, got #{inspect(value)}"}}

  defp action_status(nil), do: {:ok, nil}
  defp action_status(status) when status in [200, 201, 204], do: {:ok, status}

  defp action_status(other),
    do:
      {:error,
       {:invalid_config, :success_action_status,
        "expected 200, 201 or 204, got #{inspect(other)}"}}

  defp metadata(map) when is_map(map) do
    if Enum.all?(map, fn {k, v} -> is_binary(k) and k =~ ~r/^[a-zA-Z0-9-]+$/ and is_binary(v) end),
      do: {:ok, Enum.sort(map)},
      else:
        {:error,
         {:invalid_config, :metadata,
          "expected a map of names (letters, digits and dashes) to strings"}}
  end

  defp metadata(other),
    do: {:error, {:invalid_config, :metadata, "expected a map, got #{inspect(other)}"}}

  defp optional_text(_name, nil), do: {:ok, nil}
  defp optional_text(_name, text) when is_binary(text), do: {:ok, text}

  defp optional_text(name, other),
    do: {:error, {:invalid_config, name, "expected a string, got #{inspect(other)}"}}

  # The store a URL or policy is signed for: a handle given as `storage:`,
  # else the S3 store the options resolve to (under the sandbox, its
  # presigning configuration).
  defp signing_handle(storage_opts) do
    case Keyword.pop(storage_opts, :storage) do
      {%Handle{} = handle, _} ->
        {:ok, handle}

      {nil, storage_opts} ->
        Lookup.presign_handle(
          Micelio.Storage,
          storage_opts,
          &Lookup.handle(Keyword.put(&1, :backend, :s3))
        )

      {_other, _} ->
        {:error, {:invalid_config, :storage, "expected a handle"}}
    end
  end
end
