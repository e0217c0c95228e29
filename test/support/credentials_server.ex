defmodule Micelio.Storage.Test.CredentialsServer do
  @moduledoc false
  # A real HTTP server, OTP's :inets httpd on loopback, playing the AWS
  # credential endpoints: the ECS/EKS container endpoint (`GET /creds`,
  # checking the Authorization header when a token is expected) and the EC2
  # instance metadata service, IMDSv2 (`PUT /latest/api/token`, then the
  # role list and the role's credentials, each requiring the session token).
  # The credentials it hands out can be changed while it runs, and it counts
  # the credential documents it serves.
  require Record
  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  @imds_token "imds-session-token-7f3a"
  @role "micelio-test-role"

  def start!(credentials) do
    {pid, port, _root} = Micelio.Storage.Test.Httpd.start!(__MODULE__, "credentials")

    server = %{
      pid: pid,
      port: port,
      url: "http://127.0.0.1:#{port}",
      counters: :counters.new(1, [])
    }

    :persistent_term.put({__MODULE__, port, :counters}, server.counters)
    set!(server, credentials)
    server
  end

  def stop(server), do: :inets.stop(:httpd, server.pid)

  @doc """
  What the server hands out: `:access_key_id`, `:secret_access_key`,
  optional `:token` and `:expires_in` (seconds from the request), and the
  `:authorization` it requires on the container endpoint (nil: none).
  """
  def set!(server, credentials),
    do: :persistent_term.put({__MODULE__, server.port}, Map.new(credentials))

  @doc "How many credential documents were served."
  def served(server), do: :counters.get(server.counters, 1)

  # The httpd module callback.
  def unquote(:do)(data) do
    port = :httpd_util.lookup(mod(data, :config_db), :port)
    creds = :persistent_term.get({__MODULE__, port})
    counters = :persistent_term.get({__MODULE__, port, :counters})
    headers = mod(data, :parsed_header)

    header = fn name ->
      headers |> List.keyfind(name, 0) |> then(&(&1 && to_string(elem(&1, 1))))
    end

    imds_ok? = header.(~c"x-aws-ec2-metadata-token") == @imds_token

    case {to_string(mod(data, :method)), to_string(mod(data, :request_uri))} do
      {"GET", "/creds" <> _} ->
        if creds[:authorization] in [nil, header.(~c"authorization")],
          do: document(counters, creds),
          else: reply(401, "unauthorized")

      {"POST", "/sts" <> _} ->
        form = URI.decode_query(to_string(mod(data, :entity_body)))
        :persistent_term.put({__MODULE__, port, :last_sts}, form)

        if form["Action"] == "AssumeRoleWithWebIdentity" and
             form["WebIdentityToken"] == creds[:web_identity_token] and
             form["RoleArn"] == creds[:role_arn],
           do: sts_document(counters, creds),
           else: sts_error(form["WebIdentityToken"])

      {"PUT", "/latest/api/token"} ->
        if header.(~c"x-aws-ec2-metadata-token-ttl-seconds"),
          do: reply(200, @imds_token),
          else: reply(400, "missing ttl")

      {"GET", "/latest/meta-data/iam/security-credentials/"} when imds_ok? ->
        reply(200, @role <> "\n")

      {"GET", "/latest/meta-data/iam/security-credentials/" <> @role} when imds_ok? ->
        document(counters, Map.put(creds, :code, "Success"))

      {"GET", "/latest/" <> _} ->
        reply(401, "IMDSv2 session token required")

      _ ->
        reply(404, "not found")
    end
  end

  defp document(counters, creds) do
    :counters.add(counters, 1, 1)

    expiration =
      DateTime.utc_now()
      |> DateTime.add(Map.get(creds, :expires_in, 3600), :second)
      |> DateTime.truncate(:second)
      |> DateTime.to_iso8601()

    fields =
      [
        {"Code", creds[:code]},
        {"AccessKeyId", creds.access_key_id},
        {"SecretAccessKey", creds.secret_access_key},
        {"Token", creds[:token]},
        {"Expiration", expiration}
      ]
      |> Enum.reject(fn {_, v} -> is_nil(v) end)
      |> Enum.map_join(",", fn {k, v} -> ~s("#{k}":"#{v}") end)

    reply(200, "{" <> fields <> "}")
  end

  @doc "The form of the last STS request."
  def last_sts(server), do: :persistent_term.get({__MODULE__, server.port, :last_sts}, nil)

  defp sts_document(counters, creds) do
    :counters.add(counters, 1, 1)

    expiration =
      DateTime.utc_now()
      |> DateTime.add(Map.get(creds, :expires_in, 3600), :second)
      |> DateTime.truncate(:second)
      |> DateTime.to_iso8601()

    token = if creds[:token], do: "<SessionToken>#{creds[:token]}</SessionToken>", else: ""

    reply(200, """
    <AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
      <AssumeRoleWithWebIdentityResult>
        <Credentials>
          <AccessKeyId>#{creds.access_key_id}</AccessKeyId>
          <SecretAccessKey>#{creds.secret_access_key}</SecretAccessKey>
          #{token}
          <Expiration>#{expiration}</Expiration>
        </Credentials>
      </AssumeRoleWithWebIdentityResult>
    </AssumeRoleWithWebIdentityResponse>
    """)
  end

  # STS errors may quote the token: the client must not pass it on.
  defp sts_error(token) do
    reply(400, """
    <ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>
    <Message>Couldn't verify the token #{token}</Message></Error></ErrorResponse>
    """)
  end

  defp reply(status, body) do
    head = [code: status, content_length: to_charlist(byte_size(body))]
    {:break, [response: {:response, head, body}]}
  end
end
