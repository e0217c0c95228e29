defmodule Micelio.Storage.S3.Profile do
  @moduledoc """
  The AWS shared files: `~/.aws/credentials` and `~/.aws/config` (or
  `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`, the settings
  `s3_shared_credentials_file` / `s3_config_file`), and the profile
  `AWS_PROFILE` / `s3_profile` (default `default`).

  A profile gives static keys (`aws_access_key_id`, `aws_secret_access_key`,
  `aws_session_token`), its `region`, or a web identity
  (`web_identity_token_file` with `role_arn`). Profiles that assume a role
  from another profile (`source_profile`, `credential_source`), run a
  process (`credential_process`) or use SSO are refused with a clear
  `{:invalid_config, :s3_profile, message}`. The files are read when a
  configuration is resolved; keys in settings or environment variables
  come first, as in the AWS SDKs.
  """

  alias Micelio.Storage.Secret

  @unsupported ~w(source_profile credential_source credential_process sso_start_url sso_session)

  @doc "The `region` of `profile` in the config file, or `nil`."
  @spec region(String.t() | nil, String.t() | nil) :: String.t() | nil
  def region(profile, config_file) do
    config_file
    |> path(".aws/config")
    |> read()
    |> Map.get(section(profile, :config), %{})
    |> Map.get("region")
  end

  @doc false
  # Fills a resolved config from the profile when no keys are set.
  @spec apply(map()) :: {:ok, map()} | {:error, term()}
  def apply(config) do
    keys? =
      present?(config.s3_access_key_id) and present?(Secret.unwrap(config.s3_secret_access_key))

    if keys? or config.s3_credentials not in [nil, :static],
      do: {:ok, config},
      else: from_profile(config)
  end

  defp from_profile(config) do
    name = config.s3_profile || "default"
    creds_path = path(config.s3_shared_credentials_file, ".aws/credentials")
    config_path = path(config.s3_config_file, ".aws/config")
    creds = creds_path |> read() |> Map.get(section(name, :credentials), %{})
    conf = config_path |> read() |> Map.get(section(name, :config), %{})
    profile = Map.merge(conf, creds)
    unsupported = Enum.find(@unsupported, &Map.has_key?(profile, &1))

    cond do
      profile == %{} and config.s3_profile != nil ->
        {:error,
         {:invalid_config, :s3_profile,
          "no profile #{inspect(name)} in #{creds_path || "~/.aws/credentials"} or #{config_path || "~/.aws/config"}"}}

      present?(profile["aws_access_key_id"]) and present?(profile["aws_secret_access_key"]) ->
        {:ok,
         %{
           config
           | s3_access_key_id: profile["aws_access_key_id"],
             s3_secret_access_key: Secret.wrap(profile["aws_secret_access_key"]),
             s3_session_token: Secret.wrap(profile["aws_session_token"])
         }}

      unsupported != nil ->
        {:error,
         {:invalid_config, :s3_profile,
          "profile #{inspect(name)} uses #{unsupported}, which micelio_storage does not support; " <>
            "give it keys or web_identity_token_file + role_arn, or use container or instance credentials"}}

      present?(profile["web_identity_token_file"]) and present?(profile["role_arn"]) ->
        {:ok,
         %{
           config
           | s3_web_identity_token_file:
               config.s3_web_identity_token_file ||
                 Path.expand(profile["web_identity_token_file"]),
             s3_role_arn: config.s3_role_arn || profile["role_arn"],
             s3_role_session_name: config.s3_role_session_name || profile["role_session_name"]
         }}

      true ->
        {:ok, config}
    end
  end

  defp present?(value), do: value not in [nil, ""]

  # The credentials file names profiles bare; the config file as
  # `[profile name]`, but for `[default]`.
  defp section(nil, kind), do: section("default", kind)
  defp section(name, :credentials), do: name
  defp section("default", :config), do: "default"
  defp section(name, :config), do: "profile " <> name

  defp path(nil, default) do
    case System.get_env("HOME") do
      nil -> nil
      home -> Path.join(home, default)
    end
  end

  defp path(file, _default), do: Path.expand(file)

  defp read(nil), do: %{}

  defp read(path) do
    case File.read(path) do
      {:ok, text} -> parse(text)
      {:error, _} -> %{}
    end
  end

  @doc """
  Parses an INI file as the AWS SDKs do: `[section]` headers, `key = value`
  lines, `#` and `;` comments.

      iex> Micelio.Storage.S3.Profile.parse("[default]\\nregion = eu-west-1 # note\\n[profile ci]\\naws_access_key_id=AKID\\n")
      %{"default" => %{"region" => "eu-west-1"}, "profile ci" => %{"aws_access_key_id" => "AKID"}}
  """
  @spec parse(String.t()) :: %{String.t() => %{String.t() => String.t()}}
  def parse(text) do
    {sections, _} =
      text
      |> String.split(["\r\n", "\n"])
      |> Enum.reduce({%{}, nil}, &parse_line(String.trim(&1), &2))

    sections
  end

  defp parse_line(line, {acc, current}) do
    cond do
      line == "" or String.starts_with?(line, ["#", ";"]) ->
        {acc, current}

      String.starts_with?(line, "[") and String.ends_with?(line, "]") ->
        name = line |> String.slice(1..-2//1) |> String.trim() |> String.replace(~r/\s+/, " ")
        {Map.put_new(acc, name, %{}), name}

      current != nil and String.contains?(line, "=") ->
        [key, value] = String.split(line, "=", parts: 2)
        value = value |> String.replace(~r/\s+[#;].*$/, "") |> String.trim()
        {Map.update!(acc, current, &Map.put(&1, String.trim(key), value)), current}

      true ->
        {acc, current}
    end
  end
end
