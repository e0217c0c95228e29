defmodule Micelio.Bench.HttpcS3 do
  @moduledoc false
  # The baseline: a minimal pure-Elixir S3 client, `:httpc` + `:crypto`
  # SigV4, path-style, as an app without our library would write it.

  def put(c, key, body), do: request(c, :put, key, body)
  def get(c, key), do: request(c, :get, key, "")

  def list_all(c, prefix, token \\ nil, acc \\ []) do
    query =
      [{"list-type", "2"}, {"prefix", prefix}] ++
        if(token, do: [{"continuation-token", token}], else: [])

    {:ok, {{_, 200, _}, _, body}} = request(c, :get, nil, "", query)
    keys = Regex.scan(~r/<Key>([^<]*)<\/Key>/, body, capture: :all_but_first) |> List.flatten()

    case Regex.run(~r/<NextContinuationToken>([^<]*)</, body) do
      [_, next] -> list_all(c, prefix, next, acc ++ keys)
      _ -> acc ++ keys
    end
  end

  defp request(c, method, key, body, query \\ []) do
    path = "/#{c.bucket}" <> if(key, do: "/" <> encode(key, true), else: "")

    qs =
      query
      |> Enum.map(fn {k, v} -> {encode(k, false), encode(v, false)} end)
      |> Enum.sort()
      |> Enum.map_join("&", fn {k, v} -> "#{k}=#{v}" end)

    now = DateTime.utc_now()
    amz = Calendar.strftime(now, "%Y%m%dT%H%M%SZ")
    date = binary_part(amz, 0, 8)
    hash = hex(:crypto.hash(:sha256, body))
    host = c.host
    signed = "host;x-amz-content-sha256;x-amz-date"

    canonical =
      Enum.join(
        [
          String.upcase(to_string(method)),
          path,
          qs,
          "host:#{host}\nx-amz-content-sha256:#{hash}\nx-amz-date:#{amz}\n",
          signed,
          hash
        ],
        "\n"
      )

    scope = "#{date}/#{c.region}/s3/aws4_request"
    sts = "AWS4-HMAC-SHA256\n#{amz}\n#{scope}\n#{hex(:crypto.hash(:sha256, canonical))}"

    key_bin =
      Enum.reduce([date, c.region, "s3", "aws4_request"], "AWS4" <> c.secret, &hmac(&2, &1))

    sig = hex(hmac(key_bin, sts))

    auth =
      "AWS4-HMAC-SHA256 Credential=#{c.access}/#{scope}, SignedHeaders=#{signed}, Signature=#{sig}"

    headers = [
      {~c"x-amz-date", to_charlist(amz)},
      {~c"x-amz-content-sha256", to_charlist(hash)},
      {~c"authorization", to_charlist(auth)}
    ]

    url = to_charlist("http://#{host}#{path}" <> if(qs == "", do: "", else: "?" <> qs))

    req =
      if method == :put,
        do: {url, headers, ~c"application/octet-stream", body},
        else: {url, headers}

    :httpc.request(method, req, [timeout: 60_000], body_format: :binary)
  end

  defp hmac(k, d), do: :crypto.mac(:hmac, :sha256, k, d)
  defp hex(b), do: Base.encode16(b, case: :lower)

  defp encode(s, keep_slash),
    do: URI.encode(s, &(URI.char_unreserved?(&1) or (keep_slash and &1 == ?/)))
end
