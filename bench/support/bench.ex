defmodule Micelio.Bench do
  @moduledoc false
  # Plain-Elixir timing for the benches (Benchee is not available): run a
  # function in rounds, keep the best round's mean, print ours vs baseline.

  @doc "Mean µs per call of `fun`, best of `rounds` rounds of `n` calls."
  def us_per_op(fun, n, rounds \\ 5) do
    for(_ <- 1..n, do: fun.())

    1..rounds
    |> Enum.map(fn _ ->
      t0 = System.monotonic_time(:nanosecond)
      for(_ <- 1..n, do: fun.())
      (System.monotonic_time(:nanosecond) - t0) / n / 1000
    end)
    |> Enum.min()
  end

  @doc "Latency percentiles in µs over `n` single timed calls."
  def percentiles(fun, n, ps \\ [50, 99]) do
    for(_ <- 1..min(n, 1000), do: fun.())

    # Native time units (nanoseconds on Linux): the cheapest clock read, so
    # the timer adds as little as possible to sub-microsecond calls.
    samples =
      for _ <- 1..n do
        t0 = :erlang.monotonic_time()
        fun.()
        :erlang.monotonic_time() - t0
      end
      |> Enum.sort()
      |> List.to_tuple()

    per_us = :erlang.convert_time_unit(1_000_000, :microsecond, :native) / 1_000_000

    Map.new(ps, fn p -> {p, elem(samples, min(n - 1, div(n * p, 100))) / per_us} end)
  end

  @doc """
  The p50 in µs of timing an empty call: what the clock itself adds to
  every sample of `percentiles/3`.
  """
  def timer_overhead, do: percentiles(fn -> :ok end, 200_000, [50])[50]

  def header do
    IO.puts(
      String.pad_trailing("operation", 34) <>
        String.pad_leading("ours µs", 11) <>
        String.pad_leading("ops/s", 11) <>
        String.pad_leading("base µs", 11) <>
        String.pad_leading("ops/s", 11) <>
        "  ratio"
    )
  end

  @doc "Prints one row; `ratio` is baseline time / our time (>1 means we are faster)."
  def row(name, ours_us, base_us, note \\ "") do
    ratio = base_us / ours_us

    IO.puts(
      String.pad_trailing(name, 34) <>
        fmt(ours_us) <>
        ops(ours_us) <>
        fmt(base_us) <>
        ops(base_us) <> "  #{:erlang.float_to_binary(ratio, decimals: 2)}x #{note}"
    )

    ratio
  end

  defp fmt(us), do: String.pad_leading(:erlang.float_to_binary(us * 1.0, decimals: 2), 11)
  defp ops(us), do: String.pad_leading(Integer.to_string(round(1_000_000 / us)), 11)

  def target(label, ok?) do
    IO.puts("  target #{label}: #{if ok?, do: "MET", else: "MISSED"}")
  end

  @doc """
  Times each of this VM's threads has slept and been woken so far (its
  voluntary context switches, from `/proc/self/task`), summed by kind:
  `:schedulers` (the normal schedulers), `:io` (the engine's I/O threads),
  `:aux` (the VM's aux thread) and `:other`.
  """
  def thread_wakeups do
    for task <- File.ls!("/proc/self/task"), reduce: %{} do
      acc ->
        dir = Path.join("/proc/self/task", task)

        with {:ok, comm} <- File.read(Path.join(dir, "comm")),
             {:ok, status} <- File.read(Path.join(dir, "status")),
             [_, n] <- Regex.run(~r/^voluntary_ctxt_switches:\s+(\d+)/m, status) do
          Map.update(
            acc,
            thread_kind(String.trim(comm)),
            String.to_integer(n),
            &(&1 + String.to_integer(n))
          )
        else
          _ -> acc
        end
    end
  end

  defp thread_kind(comm) do
    cond do
      comm =~ ~r/^\d+_scheduler$/ -> :schedulers
      String.starts_with?(comm, "micelio-storage") -> :io
      comm =~ ~r/^\d+_aux$/ -> :aux
      true -> :other
    end
  end

  @doc """
  Minor page faults of this OS process per call of `fun`, over `n` calls,
  each followed by a garbage collection (so memory a call leaves behind is
  free for the next, as in a process that lives on).
  """
  def minor_faults_per_call(fun, n) do
    before = minor_faults()

    for _ <- 1..n do
      fun.()
      :erlang.garbage_collect()
    end

    (minor_faults() - before) / n
  end

  # `minflt`, the 8th field after the command name.
  defp minor_faults, do: Enum.at(proc_stat_fields(), 7)

  # The numbers of `/proc/self/stat` after the command name (which may
  # hold spaces), from the state on: the first is the state letter, left
  # as 0.
  defp proc_stat_fields do
    [_, rest] = File.read!("/proc/self/stat") |> String.split(") ", parts: 2)

    for field <- String.split(rest) do
      case Integer.parse(field) do
        {n, ""} -> n
        _ -> 0
      end
    end
  end

  @doc """
  CPU seconds (user + system, all threads) this VM has used so far, from
  `/proc/self/stat`: what a transfer costs the machine, beside its wall time.
  """
  def own_cpu_seconds do
    # utime and stime, the 12th and 13th fields after the command name,
    # in clock ticks.
    fields = proc_stat_fields()
    (Enum.at(fields, 11) + Enum.at(fields, 12)) / clock_ticks()
  end

  defp clock_ticks do
    {out, 0} = System.cmd("getconf", ["CLK_TCK"])
    String.to_integer(String.trim(out))
  end

  @doc """
  Runs `program` with `args` under a shell that reports its children's CPU
  time (`times`); returns `{its standard output, CPU seconds}`.
  """
  def cmd_with_cpu(program, args) do
    {out, 0} = System.cmd("sh", ["-c", ~s("$0" "$@" && echo && times), program | args])
    lines = String.split(String.trim_trailing(out), "\n")
    {before, [_shell, children]} = Enum.split(lines, -2)
    [user, sys] = String.split(children)
    {Enum.join(before, "\n"), shell_seconds(user) + shell_seconds(sys)}
  end

  # `times` prints `1m2.345s`.
  defp shell_seconds(text) do
    [_, m, s] = Regex.run(~r/^(\d+)m([\d.]+)s$/, text)
    String.to_integer(m) * 60 + String.to_float(s)
  end
end
