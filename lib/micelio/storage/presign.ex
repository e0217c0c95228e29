defmodule Micelio.Storage.Presign do
  @moduledoc false
  # Presigned URLs: the options that shape the URL split from those that
  # pick the store, checked, then signed by the engine (on its runtime, as
  # temporary credentials may need fetching).

  alias Micelio.Storage.{Handle, Lookup, Store, Telemetry}

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

    storage =
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

    with {:ok, method} <- presign_method(Keyword.get(presign, :method, :get)),
         :ok <- check_expiry(expires_in),
         {:ok, handle} <- storage,
         {:ok, unix} <- presign_time(Keyword.get(presign, :datetime)) do
      # Runs on the I/O runtime: temporary credentials may need fetching.
      Telemetry.observe(:presigned_url, key, handle, fn ->
        headers =
          {presign[:content_type], presign[:response_content_type],
           presign[:response_content_disposition]}

        Store.run(handle, {:presigned_url, key, method, expires_in, unix, headers})
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
end
