defmodule Micelio.Storage.FaultAndRacePropertiesTest do
  # The model under faults (S3 behind a proxy that answers 503, resets,
  # cuts answers short and stalls, following a plan StreamData draws with
  # the commands), and races of conditional puts on every backend.
  use ExUnit.Case, async: true
  use ExUnitProperties

  alias Micelio.Storage
  alias Micelio.Storage.Test.{HostileServer, Seaweed, StoreGenerators, StoreRunner, Tmp}

  @moduletag :s3
  @moduletag timeout: 900_000

  @runs String.to_integer(System.get_env("MICELIO_PROPERTY_RUNS", "100"))
  @soak_runs String.to_integer(System.get_env("MICELIO_SOAK_RUNS", "2000"))

  setup_all do
    :ok = Seaweed.ensure_started()
  end

  # What the proxy does to each request, in order; past the plan's end it
  # lets requests through.
  defp fault_plan do
    list_of(
      frequency([
        {12, constant(:pass)},
        {2, constant(:s503)},
        {1, constant(:drop)},
        {1, map(integer(1..400), &{:truncate, &1})},
        {1, constant({:slow, 150})}
      ]),
      max_length: 60
    )
  end

  defp faulty_store(plan) do
    plan = :array.from_list(plan)
    next = :counters.new(1, [])
    upstream = URI.parse(Seaweed.endpoint()).port

    server =
      HostileServer.start!(
        fn _req ->
          :counters.add(next, 1, 1)
          i = :counters.get(next, 1) - 1

          case if(i < :array.size(plan), do: :array.get(i, plan), else: :pass) do
            :s503 -> {:reply, 503, [], HostileServer.error_xml("SlowDown", "Please reduce")}
            other -> other
          end
        end,
        upstream
      )

    {server,
     Seaweed.opts(
       s3_endpoint: HostileServer.endpoint(server),
       s3_pool_size: 0,
       s3_max_retries: 1,
       timeout: 5_000
     )}
  end

  defp run_with_faults(commands, plan) do
    {server, opts} = faulty_store(plan)

    try do
      StoreRunner.run!(commands, opts, faults: true, lingering_prefixes: true)
    after
      HostileServer.stop(server)
    end
  end

  property "s3 under faults: successes equal the model, errors are documented, no foreign bytes" do
    check all(
            commands <- StoreGenerators.commands(large: false, max_commands: 20),
            plan <- fault_plan(),
            max_runs: @runs
          ) do
      run_with_faults(commands, plan)
    end
  end

  @tag :soak
  property "s3 under faults: soak" do
    check all(
            commands <- StoreGenerators.commands(large: false, max_commands: 20),
            plan <- fault_plan(),
            max_runs: @soak_runs
          ) do
      run_with_faults(commands, plan)
    end
  end

  defp fresh(:memory),
    do: [backend: :memory, memory_name: "race-#{System.unique_integer([:positive])}"]

  defp fresh(:local), do: [local_path: Tmp.dir!("race-local")]
  defp fresh(:s3), do: Seaweed.opts()

  defp fresh(:tiered_local) do
    dir = Tmp.dir!("race-tiered")

    [
      backend: :tiered,
      origin_backend: :local,
      local_path: Path.join(dir, "origin"),
      cache_disk_path: Path.join(dir, "cache")
    ]
  end

  defp fresh(:tiered_s3),
    do:
      Seaweed.opts() ++
        [backend: :tiered, origin_backend: :s3, cache_disk_path: Tmp.dir!("race-t")]

  # A counter bumped by compare-and-swap until it takes.
  defp bump(key, opts) do
    {:ok, %{content: n, etag: etag}} = Storage.get_with_metadata(key, opts)
    next = Integer.to_string(String.to_integer(n) + 1)

    case Storage.put_if_match(key, next, etag, opts) do
      {:ok, _} -> :ok
      {:error, :precondition_failed} -> bump(key, opts)
    end
  end

  for backend <- [:memory, :local, :s3, :tiered_local, :tiered_s3] do
    property "#{backend}: one put_if_none_match wins a race, and its bytes are stored" do
      check all(
              racers <- integer(2..8),
              key <- StoreGenerators.key(),
              max_runs: max(div(@runs, 10), 5)
            ) do
        opts = fresh(unquote(backend))

        results =
          1..racers
          |> Task.async_stream(&{&1, Storage.put_if_none_match(key, "racer #{&1}", opts)},
            max_concurrency: racers,
            # Losers of a race on S3 may be told to slow down and retry.
            timeout: 60_000
          )
          |> Enum.map(fn {:ok, r} -> r end)

        winners = for {i, {:ok, ^key}} <- results, do: i
        assert [winner] = winners

        assert Enum.all?(results, fn {i, r} ->
                 i == winner or r == {:error, :precondition_failed}
               end)

        assert Storage.get(key, opts) == {:ok, "racer #{winner}"}
      end
    end

    property "#{backend}: compare-and-swap counters never lose an update" do
      check all(
              workers <- integer(2..4),
              bumps <- integer(1..4),
              key <- StoreGenerators.key(),
              max_runs: max(div(@runs, 10), 3)
            ) do
        opts = fresh(unquote(backend))
        {:ok, _} = Storage.put(key, "0", opts)

        1..workers
        |> Task.async_stream(fn _ -> for _ <- 1..bumps, do: bump(key, opts) end,
          max_concurrency: workers,
          timeout: 60_000
        )
        |> Stream.run()

        assert Storage.get(key, opts) == {:ok, Integer.to_string(workers * bumps)}
      end
    end
  end
end
