defmodule Micelio.Storage.S3.Probe do
  @moduledoc false
  # What a bucket actually supports, asked of the bucket itself (see
  # `Micelio.Storage.S3.probe/1` and `mix micelio.storage.doctor`). Every
  # probe object lives under its own prefix, `.micelio-doctor/<random>/`,
  # and is deleted at the end, multipart uploads included.

  alias Micelio.Storage

  @skew_tolerance 300
  @mib 1024 * 1024

  # The capabilities, in the order they are probed and printed.
  @order [
    :reachable,
    :tls,
    :credentials,
    :bucket,
    :clock_skew,
    :put,
    :get,
    :head,
    :range,
    :if_none_match,
    :if_match,
    :copy_if_absent,
    :checksum_headers,
    :content_md5,
    :multipart,
    :multipart_unequal_parts,
    :delete_objects,
    :post_policy,
    :cors,
    :delete
  ]

  # Without these, the library cannot work with the bucket at all.
  @needed [:reachable, :credentials, :bucket, :put, :get, :head, :delete]

  def order, do: @order
  def needed, do: @needed

  @doc false
  def run(opts) when is_list(opts) do
    opts = Keyword.put_new(opts, :backend, :s3)
    prefix = ".micelio-doctor/#{Base.url_encode64(:crypto.strong_rand_bytes(6), padding: false)}/"
    scoped = Keyword.update(opts, :s3_prefix, prefix, &(&1 <> prefix))

    with {:ok, handle} <- Storage.open(scoped) do
      results = connection(handle, opts)

      results =
        if Enum.all?([:reachable, :credentials, :bucket], &(results[&1] == :ok)),
          do: Map.merge(results, objects(scoped)),
          else: skip_rest(results)

      cleanup(scoped)
      {:ok, results}
    end
  end

  defp skip_rest(results) do
    Enum.reduce(@order, results, fn cap, acc ->
      Map.put_new(acc, cap, {:error, :not_probed})
    end)
  end

  ## Reachability, TLS, credentials, the bucket, the clock

  defp connection(handle, opts) do
    endpoint = endpoint(handle)

    base =
      case Storage.health(storage: handle) do
        :ok ->
          %{reachable: :ok, credentials: :ok, bucket: :ok}

        {:error, {:forbidden, _} = reason} ->
          %{reachable: :ok, credentials: {:error, reason}, bucket: {:error, :not_probed}}

        {:error, {:no_such_bucket, _} = reason} ->
          %{reachable: :ok, credentials: :ok, bucket: {:error, reason}}

        {:error, reason} ->
          %{reachable: {:error, reason}}
      end

    tls =
      cond do
        not String.starts_with?(endpoint, "https://") -> {:error, :plain_http}
        base[:reachable] == :ok -> :ok
        true -> {:error, :not_probed}
      end

    base
    |> Map.put(:tls, tls)
    |> Map.put(:clock_skew, clock_skew(endpoint, opts))
  end

  defp endpoint(%{config: config}) do
    case config[:s3_endpoint] do
      url when is_binary(url) -> url
      nil -> "https://s3.#{config[:s3_region]}.amazonaws.com"
    end
  end

  # The server's `Date` against ours (an unsigned request: any answer has one).
  defp clock_skew(endpoint, _opts) do
    {:ok, _} = Application.ensure_all_started(:inets)

    request = {String.to_charlist(endpoint <> "/"), [{~c"connection", ~c"close"}]}

    case :httpc.request(:head, request, [timeout: 10_000], []) do
      {:ok, {_status, headers, _}} ->
        with {_, date} <- List.keyfind(headers, ~c"date", 0),
             {:ok, at} <- Micelio.Storage.Plug.Responses.parse_date(List.to_string(date)) do
          skew = DateTime.diff(at, DateTime.utc_now())
          if abs(skew) <= @skew_tolerance, do: :ok, else: {:error, {:skew_seconds, skew}}
        else
          _ -> {:error, :no_date_header}
        end

      {:error, reason} ->
        {:error, {:network, inspect(reason)}}
    end
  end

  ## Objects

  defp objects(opts) do
    put = Storage.put("probe.txt", "micelio doctor", opts)

    basics = %{
      put: ok(put),
      get: expect(Storage.get("probe.txt", opts), {:ok, "micelio doctor"}),
      head: ok(Storage.head("probe.txt", opts)),
      range: expect(Storage.get("probe.txt", opts ++ [range: {8, 6}]), {:ok, "doctor"})
    }

    Map.merge(basics, %{
      if_none_match: if_none_match(opts),
      if_match: if_match(opts),
      copy_if_absent: copy_if_absent(opts),
      checksum_headers: ok(Storage.put("crc.txt", "x", set(opts, s3_checksums: :when_supported))),
      content_md5: ok(Storage.put("md5.txt", "x", set(opts, s3_checksums: :when_required))),
      multipart: multipart(opts),
      multipart_unequal_parts: unequal_parts(opts),
      delete_objects: delete_objects(opts),
      post_policy: post_policy(opts),
      cors: cors(opts),
      delete: delete(opts)
    })
  end

  # The options with `settings` in place of the store's own: a probe of one
  # switch must send what it probes, whatever the config says (appended,
  # the config's value would win, as the first of a key does).
  defp set(opts, settings), do: Keyword.merge(opts, settings)

  defp ok({:ok, _}), do: :ok
  defp ok(:ok), do: :ok
  defp ok({:error, reason}), do: {:error, reason}

  defp expect(result, result), do: :ok
  defp expect({:error, reason}, _), do: {:error, reason}
  defp expect(other, _), do: {:error, {:unexpected, other}}

  defp if_none_match(opts) do
    case Storage.put_if_none_match("probe.txt", "again", opts) do
      {:error, :precondition_failed} -> ok(Storage.put_if_none_match("new.txt", "x", opts))
      {:ok, _} -> {:error, :not_enforced}
      {:error, reason} -> {:error, reason}
    end
  end

  defp if_match(opts) do
    with {:ok, %{etag: etag}} <- Storage.head("probe.txt", opts) do
      case Storage.put_if_match("probe.txt", "x", "not-the-etag", opts) do
        {:error, :precondition_failed} ->
          ok(Storage.put_if_match("probe.txt", "micelio doctor", etag, opts))

        {:ok, _} ->
          {:error, :not_enforced}

        {:error, reason} ->
          {:error, reason}
      end
    end
  end

  # The configured mechanism of `copy(..., if_absent: true)`; when it is
  # not enforced, the first other one that is (`{:error, {:use, mechanism}}`),
  # else `{:error, {:unsupported, reason}}`.
  defp copy_if_absent(opts) do
    case copy_if_absent_enforced(opts) do
      :ok ->
        :ok

      {:error, reason} ->
        [:if_none_match, :multipart, :r2_header]
        |> Enum.find(&(copy_if_absent_enforced(set(opts, s3_copy_if_absent: &1)) == :ok))
        |> case do
          nil -> {:error, {:unsupported, reason}}
          mechanism -> {:error, {:use, mechanism}}
        end
    end
  end

  defp copy_if_absent_enforced(opts) do
    target = "copy-#{System.unique_integer([:positive])}.txt"

    with {:ok, _} <- Storage.copy("probe.txt", target, opts ++ [if_absent: true]) do
      case Storage.copy("probe.txt", target, opts ++ [if_absent: true]) do
        {:error, :precondition_failed} -> :ok
        {:ok, _} -> {:error, :not_enforced}
        {:error, reason} -> {:error, reason}
      end
    end
  end

  defp multipart(opts) do
    big = :binary.copy("m", 11 * @mib)
    mp = set(opts, s3_multipart_threshold: 5 * @mib, s3_part_size: 5 * @mib)

    with {:ok, _} <- Storage.put_stream("multipart.bin", [big], mp),
         {:ok, %{size: size}} when size == byte_size(big) <- Storage.head("multipart.bin", opts) do
      :ok
    else
      {:error, reason} -> {:error, reason}
      other -> {:error, {:unexpected, other}}
    end
  end

  # Parts of 5 MiB, 6 MiB and 1 KiB, through raw signed requests (our own
  # uploader only sends equal parts): R2 refuses them.
  defp unequal_parts(opts) do
    with {:ok, url} <- object_url("unequal.bin", opts),
         {:ok, 200, body} <- signed(:post, url <> "?uploads", "", opts),
         [_, id] <- Regex.run(~r{<UploadId>([^<]+)</UploadId>}, body) || {:error, :no_upload_id} do
      sizes = [5 * @mib, 6 * @mib, 1024]

      parts =
        Enum.with_index(sizes, 1)
        |> Enum.map(fn {size, n} ->
          query = "?partNumber=#{n}&uploadId=#{URI.encode_www_form(id)}"

          case signed(:put, url <> query, :binary.copy("u", size), opts) do
            {:ok, 200, _body, headers} -> {n, headers["etag"]}
            other -> throw({:part, other})
          end
        end)

      complete =
        "<CompleteMultipartUpload>" <>
          Enum.map_join(parts, "", fn {n, etag} ->
            "<Part><PartNumber>#{n}</PartNumber><ETag>#{etag}</ETag></Part>"
          end) <> "</CompleteMultipartUpload>"

      case signed(:post, url <> "?uploadId=#{URI.encode_www_form(id)}", complete, opts) do
        {:ok, 200, body} ->
          if body =~ "<Error>", do: {:error, {:s3_error, s3_code(body)}}, else: :ok

        other ->
          signed(:delete, url <> "?uploadId=#{URI.encode_www_form(id)}", "", opts)
          http_error(other)
      end
    else
      other -> http_error(other)
    end
  catch
    {:part, other} -> http_error(other)
  end

  defp delete_objects(opts) do
    for k <- ~w(d1 d2), do: Storage.put(k, "x", opts)

    with {:ok, url} <- object_url("d1", opts) do
      bucket_url = String.replace_suffix(url, "/" <> full_key("d1", opts), "")
      keys = Enum.map_join(~w(d1 d2), "", &"<Object><Key>#{full_key(&1, opts)}</Key></Object>")
      body = "<Delete><Quiet>true</Quiet>#{keys}</Delete>"
      md5 = Base.encode64(:crypto.hash(:md5, body))

      case signed(:post, bucket_url <> "/?delete", body, opts, [{"content-md5", md5}]) do
        {:ok, 200, resp} -> if resp =~ "<DeleteResult", do: :ok, else: {:error, :malformed}
        other -> http_error(other)
      end
    end
  end

  defp post_policy(opts) do
    post_opts = set(opts, s3_post_uploads: true, content_length_range: {1, 100})

    with {:ok, %{url: url, fields: fields}} <- Storage.presigned_post("posted.txt", post_opts) do
      case form_post(url, fields, "posted by the doctor") do
        {:ok, status} when status in 200..299 -> :ok
        {:ok, status} -> {:error, {:http_status, status}}
        {:error, reason} -> {:error, reason}
      end
    end
  end

  defp cors(opts) do
    case Micelio.Storage.S3.get_bucket_cors(opts) do
      {:ok, []} ->
        {:error, :no_cors_rules}

      {:ok, rules} ->
        if Enum.any?(rules, &Enum.any?(&1.allowed_methods, fn m -> m in ["POST", "PUT"] end)),
          do: :ok,
          else: {:error, :no_upload_rule}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp delete(opts) do
    with {:ok, _} <- Storage.delete("probe.txt", opts),
         {:error, :not_found} <- Storage.get("probe.txt", opts) do
      :ok
    else
      {:ok, _} -> {:error, :still_there}
      {:error, reason} -> {:error, reason}
    end
  end

  defp cleanup(opts) do
    with {:ok, keys} <- Storage.list("", opts), do: Storage.delete_many(keys, opts)
    Micelio.Storage.S3.abort_incomplete_uploads("", opts ++ [older_than: 0])
  end

  ## Raw signed requests (what the library's own calls cannot send)

  defp object_url(key, opts) do
    with {:ok, url} <- Storage.presigned_url(key, opts ++ [method: :put, expires_in: 60]) do
      {:ok, url |> String.split("?") |> hd()}
    end
  end

  defp full_key(key, opts), do: (opts[:s3_prefix] || "") <> key

  defp signed(method, url, body, opts, extra \\ []) do
    sign_opts =
      opts
      |> Keyword.take(Micelio.Storage.Settings.names())
      |> Keyword.put(:body, body)

    with {:ok, headers} <- Micelio.Storage.S3.sign_headers(method, url, extra, sign_opts) do
      # One connection per request: each is judged on its own (by proxies
      # and load balancers that look at the first request only).
      headers =
        for {k, v} <- headers ++ extra ++ [{"connection", "close"}],
            do: {to_charlist(k), to_charlist(v)}

      request =
        if method in [:put, :post],
          do: {to_charlist(url), headers, ~c"application/octet-stream", body},
          else: {to_charlist(url), headers}

      case :httpc.request(method, request, [timeout: 60_000], body_format: :binary) do
        {:ok, {{_, status, _}, resp_headers, resp}} when method == :put ->
          {:ok, status, resp,
           Map.new(resp_headers, fn {k, v} -> {to_string(k), to_string(v)} end)}

        {:ok, {{_, status, _}, _resp_headers, resp}} ->
          {:ok, status, resp}

        {:error, reason} ->
          {:error, {:network, inspect(reason)}}
      end
    end
  end

  defp http_error({:ok, status, body}), do: {:error, {:s3_error, status, s3_code(body)}}
  defp http_error({:ok, status, body, _headers}), do: http_error({:ok, status, body})
  defp http_error({:error, reason}), do: {:error, reason}
  defp http_error(other), do: {:error, {:unexpected, other}}

  defp s3_code(body) do
    case Regex.run(~r{<Code>([^<]+)</Code>}, body) do
      [_, code] -> code
      _ -> "unknown"
    end
  end

  defp form_post(url, fields, content) do
    boundary = "----micelio-doctor#{System.unique_integer([:positive])}"

    parts =
      for {name, value} <- fields,
          do: [
            "--#{boundary}\r\n",
            ~s(content-disposition: form-data; name="#{name}"\r\n\r\n),
            value,
            "\r\n"
          ]

    body =
      IO.iodata_to_binary([
        parts,
        "--#{boundary}\r\n",
        ~s(content-disposition: form-data; name="file"; filename="doctor.txt"\r\n),
        "content-type: text/plain\r\n\r\n",
        content,
        "\r\n--#{boundary}--\r\n"
      ])

    type = to_charlist("multipart/form-data; boundary=#{boundary}")

    request = {to_charlist(url), [{~c"connection", ~c"close"}], type, body}

    case :httpc.request(:post, request, [timeout: 30_000], []) do
      {:ok, {{_, status, _}, _, _}} -> {:ok, status}
      {:error, reason} -> {:error, {:network, inspect(reason)}}
    end
  end
end
