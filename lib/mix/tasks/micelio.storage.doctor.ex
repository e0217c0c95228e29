defmodule Mix.Tasks.Micelio.Storage.Doctor do
  @shortdoc "Probes an S3 bucket: what works, and the settings to use"

  @moduledoc """
  Probes the configured S3 bucket with `Micelio.Storage.S3.probe/1` and
  prints a table of what works, the provider profile in use and the
  settings the results call for. It works under its own prefix and cleans
  up after itself.

      mix micelio.storage.doctor                        # the usual settings: config and environment
      mix micelio.storage.doctor --store MyApp.Storage  # a store module's config

  It exits with status 1 when something the library needs is missing
  (reachability, credentials, the bucket, put, get, head or delete), and 0
  otherwise: other rows are advice.
  """
  use Mix.Task

  alias Micelio.Storage.S3

  @impl true
  def run(args) do
    {opts, _, _} = OptionParser.parse(args, strict: [store: :string])
    Mix.Task.run("app.start")

    storage =
      case opts[:store] do
        nil ->
          [backend: :s3]

        name ->
          module = Module.concat([name])
          Code.ensure_loaded?(module) || Mix.raise("no store module #{name}")

          case module.config() do
            {:ok, config} -> Keyword.put_new(config, :backend, :s3)
            {:error, reason} -> Mix.raise("#{name}: #{Micelio.Storage.Error.describe(reason)}")
          end
      end

    case S3.probe(storage) do
      {:ok, results} ->
        print(results, storage)

        missing = Enum.reject(S3.Probe.needed(), &(results[&1] == :ok))

        if missing != [] do
          Mix.shell().error("\nmissing what the library needs: #{Enum.join(missing, ", ")}")
          exit({:shutdown, 1})
        end

      {:error, reason} ->
        Mix.shell().error("cannot probe: #{Micelio.Storage.Error.describe(reason)}")
        exit({:shutdown, 1})
    end
  end

  defp print(results, storage) do
    {:ok, handle} = Micelio.Storage.open(storage)
    config = handle.config
    profile = S3.provider_profile(config[:s3_provider], config[:s3_endpoint])

    Mix.shell().info(
      "bucket #{config[:s3_bucket]} at #{config[:s3_endpoint] || "AWS"} (profile: #{profile.provider})\n"
    )

    width = S3.Probe.order() |> Enum.map(&String.length(Atom.to_string(&1))) |> Enum.max()

    for cap <- S3.Probe.order() do
      mark = if cap in S3.Probe.needed(), do: "*", else: " "
      name = String.pad_trailing(Atom.to_string(cap), width)
      Mix.shell().info("#{mark} #{name}  #{outcome(results[cap])}")
    end

    Mix.shell().info("\n(* needed by the library)")

    case S3.advice(results, profile) do
      [] ->
        Mix.shell().info("settings: the #{profile.provider} profile fits this bucket")

      advice ->
        Mix.shell().info("settings to use:")
        for {k, v} <- advice, do: Mix.shell().info("  #{k}: #{inspect(v)}")
    end
  end

  defp outcome(:ok), do: "ok"
  defp outcome({:error, :not_probed}), do: "not probed"
  defp outcome({:error, reason}), do: "no: " <> describe(reason)
  defp outcome(nil), do: "not probed"

  defp describe({:s3_error, status, code}), do: "#{code} (HTTP #{status})"
  defp describe(reason), do: Micelio.Storage.Error.describe(reason)
end
