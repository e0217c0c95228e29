defmodule Micelio.Storage.Test.ProviderQuirks do
  @moduledoc false
  # A proxy in front of SeaweedFS that behaves as another provider where
  # that provider differs from S3 (what broke popular clients):
  #
  #   :b2  - refuses `x-amz-checksum-*` and `x-amz-sdk-checksum-algorithm`
  #          headers (InvalidArgument);
  #   :r2  - refuses a multipart upload whose parts but the last differ in
  #          size (InvalidPart), fails DeleteObjects over 700 keys
  #          (InternalError), has no POST uploads (NotImplemented), takes
  #          only the region `auto`, and makes a copy conditional by its
  #          own `cf-copy-destination-if-none-match` header;
  #   :gcs - answers DeleteObjects with NotImplemented.
  #
  # Built on HostileServer: clients set `s3_pool_size: 0` so every request
  # meets the rules.

  alias Micelio.Storage.Test.{HostileServer, Seaweed}

  @doc """
  Starts the emulation of `provider`; returns `{proxy, endpoint}`. The
  proxy stops with the process that started it.
  """
  def start!(provider) do
    :ok = Seaweed.ensure_started()
    parts = :ets.new(:parts, [:public, :set])
    upstream = URI.parse(Seaweed.endpoint()).port
    proxy = HostileServer.start!(rule(provider, parts), upstream)
    {proxy, HostileServer.endpoint(proxy)}
  end

  @doc """
  Storage options for a fresh area of the bucket, through the proxy. The
  region is left to the profile (`auto` on R2), as a user of the provider
  would leave it.
  """
  def opts(endpoint, extra) do
    Seaweed.opts([s3_endpoint: endpoint, s3_pool_size: 0] ++ extra) |> Keyword.delete(:s3_region)
  end

  defp rule(:b2, _parts) do
    fn req ->
      case Enum.find(Map.keys(req.headers), &checksum_header?/1) do
        nil ->
          :pass

        header ->
          error(
            400,
            "InvalidArgument",
            "Unsupported header '#{header}' received for this API call."
          )
      end
    end
  end

  defp rule(:r2, parts) do
    fn
      # R2's own copy-if-absent header: answered here (SeaweedFS does not
      # know it) by asking SeaweedFS whether the destination exists.
      %{
        method: "PUT",
        path: path,
        headers: %{"x-amz-copy-source" => _, "cf-copy-destination-if-none-match" => "*"}
      } ->
        "/" <> bucket_and_key = URI.decode(path)
        [_bucket, key] = String.split(bucket_and_key, "/", parts: 2)

        if Micelio.Storage.exists?(key, Seaweed.opts(s3_prefix: "")),
          do:
            error(
              412,
              "PreconditionFailed",
              "At least one of the pre-conditions you specified did not hold"
            ),
          else: :pass

      %{method: "PUT", query: %{"partNumber" => n, "uploadId" => id}, body: body} ->
        :ets.insert(parts, {{id, String.to_integer(n)}, byte_size(body)})
        :pass

      %{method: "POST", query: %{"uploadId" => id}} ->
        sizes =
          parts
          |> :ets.match({{id, :"$1"}, :"$2"})
          |> Enum.sort()
          |> Enum.map(fn [_n, size] -> size end)

        leading = Enum.drop(sizes, -1)

        if Enum.uniq(leading) |> length() > 1,
          do: error(400, "InvalidPart", "All non-trailing parts must have the same length."),
          else: :pass

      %{method: "POST", query: %{"delete" => _}, body: body} ->
        keys = length(:binary.matches(body, "<Key>"))

        if keys > 700,
          do: error(500, "InternalError", "We encountered an internal error. Please try again."),
          else: :pass

      %{method: "POST", headers: %{"content-type" => "multipart/form-data" <> _}} ->
        error(501, "NotImplemented", "POST Object is not implemented")

      %{headers: %{"authorization" => auth}} = _req ->
        if auth =~ ~r"Credential=[^/]+/[0-9]+/auto/s3/",
          do: :pass,
          else:
            error(
              400,
              "AuthorizationHeaderMalformed",
              "The authorization header is malformed; the region must be 'auto'."
            )

      _unsigned ->
        :pass
    end
  end

  defp rule(:gcs, _parts) do
    fn
      %{method: "POST", query: %{"delete" => _}} ->
        error(
          501,
          "NotImplemented",
          "A header or query you provided requested a function that is not implemented."
        )

      _ ->
        :pass
    end
  end

  defp checksum_header?(name),
    do: String.starts_with?(name, "x-amz-checksum-") or name == "x-amz-sdk-checksum-algorithm"

  defp error(status, code, message) do
    {:reply, status, [{"content-type", "application/xml"}],
     HostileServer.error_xml(code, message)}
  end
end
