defmodule Micelio.Storage.Error do
  @moduledoc """
  Raised by the bang functions of `Micelio.Storage` (`get!/2`, `put!/3`, ...)
  and by `Micelio.Storage.exists?/2` when the answer is not known.

  `reason` is the same term the non-bang function returns in `{:error, reason}`,
  so it can be matched:

      try do
        Micelio.Storage.get!("missing")
      rescue
        e in Micelio.Storage.Error -> e.reason
      end
      #=> :not_found
  """

  defexception [:reason, :operation, :key, :root, :path]

  @type t :: %__MODULE__{
          reason: term(),
          operation: atom() | nil,
          key: String.t() | nil,
          root: String.t() | nil,
          path: String.t() | nil
        }

  @doc """
  The message names the operation and the key, and for I/O errors the root
  directory too; `reason` stays the matchable term.

      iex> Exception.message(%Micelio.Storage.Error{reason: {:io, :eacces}, operation: :put,
      ...>   key: "a/b.txt", root: "/var/micelio/storage"})
      ~s[put "a/b.txt" under /var/micelio/storage: permission denied (eacces)]
  """
  @impl true
  def message(%__MODULE__{reason: {:io, _} = reason, operation: op, key: key, path: path})
      when is_binary(path) do
    file =
      if op == :get_file,
        do: "cannot write the destination file #{path}",
        else: "cannot read the source file #{path}"

    "#{op} #{inspect(key)}: #{file}: #{describe(reason)}"
  end

  def message(%__MODULE__{reason: reason, operation: op, key: key, root: root}) do
    under = if root && match?({:io, _}, reason), do: " under #{root}", else: ""

    where =
      case {op, key} do
        {nil, _} -> ""
        {op, nil} -> "#{op}#{under}: "
        {op, key} -> "#{op} #{inspect(key)}#{under}: "
      end

    where <> describe(reason)
  end

  @doc false
  def describe(:not_found), do: "not found"
  def describe(:precondition_failed), do: "precondition failed (the object changed or exists)"
  def describe(:timeout), do: "timed out"
  def describe(:missing_s3_bucket), do: "no S3 bucket configured (s3_bucket or S3_BUCKET)"

  def describe(:missing_s3_credentials),
    do:
      "no S3 credentials (s3_access_key_id/s3_secret_access_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, " <>
        "an AWS profile with keys, AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, " <>
        "a container credentials URI, or s3_credentials: :instance)"

  def describe({:invalid_key, key}) when is_binary(key) do
    rule =
      case Micelio.Storage.Native.key_rule(key) do
        nil -> "with the store's s3_prefix it passes S3's 1024-byte key limit"
        rule -> rule
      end

    "invalid key #{inspect(key)}: #{rule}"
  end

  def describe({:invalid_key, key}),
    do: "invalid key #{inspect(key)}: a key must be a string"

  def describe({:invalid_prefix, p}), do: "invalid prefix #{inspect(p)}"

  def describe({:unsafe_path, key}),
    do: "#{inspect(key)} resolves through a symlink or out of the root"

  def describe({:invalid_config, setting, msg}), do: "invalid #{setting}: #{msg}"
  def describe({:io, {:errno, code}}), do: "I/O error (errno #{code})"
  def describe({:io, posix}) when is_atom(posix), do: "#{:file.format_error(posix)} (#{posix})"

  def describe({:sandbox, :not_checked_out}),
    do:
      "no Micelio.Storage.Sandbox checkout owns this process: call " <>
        "Micelio.Storage.Sandbox.checkout/1 in the test's setup, or Micelio.Storage.Sandbox.allow/2 it"

  def describe({:sandbox, :already_checked_out}),
    do:
      "Micelio.Storage.Sandbox.allow/2: that process checked out its own store (it is another " <>
        "test); a test's store is never replaced"

  def describe({:sandbox, :already_allowed}),
    do:
      "Micelio.Storage.Sandbox.allow/2: that process is already allowed into another test's " <>
        "store; it cannot belong to two tests"

  def describe({:sandbox, :not_started}),
    do:
      "Micelio.Storage.Sandbox is not started: call Micelio.Storage.Sandbox.start/1 in test_helper.exs"

  def describe({:no_such_bucket, bucket}),
    do: "the bucket #{inspect(bucket)} does not exist (check s3_bucket and s3_endpoint)"

  def describe({:partial, deleted, failures}) do
    shown =
      failures
      |> Enum.take(3)
      |> Enum.map_join(", ", fn {k, r} -> "#{inspect(k)}: #{describe(r)}" end)

    more = if length(failures) > 3, do: ", ...", else: ""
    "#{length(failures)} keys not deleted (#{shown}#{more}); #{length(deleted)} deleted"
  end

  def describe(:changed),
    do: "the object was replaced while it was being read in parts; read it again"

  def describe({:checksum_mismatch, expected, got}),
    do: "checksum mismatch: the server holds CRC-32 #{expected}, the content read has #{got}"

  def describe({:forbidden, code}), do: "forbidden (#{code})"
  def describe({:s3_error, status, code, msg}), do: "S3 error #{status} #{code}: #{msg}"
  def describe({:network, reason}), do: "network error: #{reason}"
  def describe({:credentials, reason}), do: "cannot get S3 credentials: #{reason}"
  def describe({:panic, msg}), do: "internal error (Rust panic): #{msg}"
  def describe(other), do: inspect(other)

  @doc false
  # The value of `{:ok, value}`, or raises this exception for the reason of
  # `{:error, reason}`, naming the operation and key (and for I/O errors
  # the store's root directory).
  def unwrap!({:ok, value}, _op, _key, _opts), do: value

  def unwrap!({:error, reason}, op, key, opts), do: raise(exception_for(reason, op, key, opts))

  @doc false
  # As `unwrap!/4` for a transfer: an I/O error names the caller's file
  # when that file is the cause (a put_file source that cannot be read, a
  # get_file destination whose directory cannot be written), else the
  # store's root.
  def unwrap_file!({:error, {:io, _} = reason}, op, key, opts, path) when is_binary(path) do
    if file_at_fault?(op, path),
      do: raise(%__MODULE__{reason: reason, operation: op, key: key, path: path}),
      else: unwrap!({:error, reason}, op, key, opts)
  end

  def unwrap_file!(result, op, key, opts, _path), do: unwrap!(result, op, key, opts)

  defp exception_for({:io, _} = reason, op, key, opts),
    do: %__MODULE__{reason: reason, operation: op, key: key, root: local_root(opts)}

  defp exception_for(reason, op, key, _opts),
    do: %__MODULE__{reason: reason, operation: op, key: key}

  defp local_root(%Micelio.Storage.Handle{config: config}), do: config[:local_path]

  defp local_root(opts) do
    case Micelio.Storage.Config.resolve(opts) do
      {:ok, config} -> config[:local_path]
      _ -> nil
    end
  end

  defp file_at_fault?(:put_file, path), do: match?({:error, _}, File.open(path, [:read], & &1))

  defp file_at_fault?(:get_file, path) do
    dir = Path.dirname(path)

    not File.dir?(dir) or
      match?({:ok, %{access: access}} when access in [:read, :none], File.stat(dir))
  end
end
