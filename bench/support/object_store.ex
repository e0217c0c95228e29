defmodule Micelio.Bench.ObjectStore do
  @moduledoc false
  # The object_store (Rust) baseline: a small program in
  # bench/object_store_baseline, built here from crates.io the first time a
  # bench needs it (never by the test command). Times are measured inside
  # the program, so its startup is not counted.

  @dir Path.expand("../object_store_baseline", __DIR__)

  @doc "Builds the program (quiet when up to date); returns its path."
  def build! do
    IO.puts("building the object_store baseline (cargo build --release)...")

    {_, 0} =
      System.cmd(
        "cargo",
        ["build", "--release", "-q", "--manifest-path", Path.join(@dir, "Cargo.toml")],
        stderr_to_stdout: true,
        into: IO.stream()
      )

    Path.join(@dir, "target/release/object_store_baseline")
  end

  @doc "Runs the program with `args`; returns its whitespace-split output."
  def run!(program, args) do
    {out, 0} = System.cmd(program, args)
    String.split(String.trim(out))
  end

  @doc "Like `run!/2`, with the CPU seconds the program used: `{fields, cpu}`."
  def run_with_cpu!(program, args) do
    {out, cpu} = Micelio.Bench.cmd_with_cpu(program, args)
    {String.split(String.trim(out)), cpu}
  end

  @doc """
  `{seconds, cpu_seconds}` for `count` PUTs or GETs of `size` bytes,
  `concurrency` at a time: the wall time, and the CPU (user + system, all
  threads) the program spent on them.
  """
  def ops!(program, op, s3, size, count, concurrency) do
    [secs, cpu] =
      run!(program, [
        "ops",
        op,
        s3.endpoint,
        s3.bucket,
        s3.prefix,
        s3.access,
        s3.secret,
        "#{size}",
        "#{count}",
        "#{concurrency}"
      ])

    {String.to_float(secs), to_float(cpu)}
  end

  # The program prints `0` when no clock tick passed.
  defp to_float(text), do: elem(Float.parse(text), 0)
end
