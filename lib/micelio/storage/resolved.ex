defmodule Micelio.Storage.Resolved do
  @moduledoc false
  # Keyword options already resolved to a backend and its store.
  #
  # Resolving reads about twenty settings through the options, the app
  # config and the environment (about 11 µs, more than a local read of a
  # small file). A remembered resolution costs a digest, one ETS read and a
  # re-read of the environment variables it depended on, and is used only
  # while those still hold the same values, so `Application.put_env/3` and
  # `System.put_env/2` take effect on the next call as before.
  #
  # Keys are digests and values hold no secret: the table can be dumped
  # (observer, crash dumps) without leaking credentials.

  alias Micelio.Storage.Config

  @table __MODULE__
  @max_entries 1024
  @app_key {:micelio, Micelio.Storage}
  @secrets [:s3_secret_access_key, :s3_session_token, :s3_container_authorization_token]

  @doc "Creates the table; its owner is the `Micelio.Storage.Stores` server."
  def create_table do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
  end

  @doc """
  `{:ok, mod, store, config}` for `opts`, from the table or from `resolve`
  (a function of the options returning the same shape or an error).
  """
  def fetch(opts, resolve) do
    {app_name, key} = @app_key
    app = Application.get_env(app_name, key, [])
    digest = :crypto.hash(:sha256, :erlang.term_to_binary({opts, app}))

    case :ets.lookup(@table, digest) do
      [{_, env, mod, store, config}] ->
        if current?(env),
          do: {:ok, mod, store, config},
          else: remember(digest, opts, app, resolve)

      [] ->
        remember(digest, opts, app, resolve)
    end
  rescue
    # The application is not started (a script calling in early): no table.
    ArgumentError -> resolve.(opts)
  end

  # The environment is read before the resolution that is stored, so a
  # change racing it is seen by the next call's check.
  defp remember(digest, opts, app, resolve) do
    with {:ok, _, _, first} <- resolve.(opts),
         vars = Config.env_inputs(opts, app, first),
         env =
           Enum.map(vars, fn {var, secret?} -> snapshot(String.to_charlist(var), secret?) end),
         {:ok, mod, store, config} <- resolve.(opts) do
      same_inputs? = Config.env_inputs(opts, app, config) == vars
      config = Map.drop(config, @secrets)

      if same_inputs? do
        if :ets.info(@table, :size) >= @max_entries, do: :ets.delete_all_objects(@table)
        :ets.insert(@table, {digest, env, mod, store, config})
      end

      {:ok, mod, store, config}
    end
  end

  # Charlists and `:os.getenv/1` directly: this check is most of a hit's
  # cost. A secret's value is kept as a digest.
  defp current?([]), do: true
  defp current?([{var, value} | rest]), do: :os.getenv(var) == value and current?(rest)
  defp current?([{var, :digest, d} | rest]), do: digest(:os.getenv(var)) == d and current?(rest)

  defp snapshot(var, false), do: {var, :os.getenv(var)}
  defp snapshot(var, true), do: {var, :digest, digest(:os.getenv(var))}

  defp digest(false), do: false
  defp digest(value), do: :crypto.hash(:sha256, value)
end
