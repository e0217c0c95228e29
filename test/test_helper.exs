# `mix test --only soak` runs the property tests for as long as
# MICELIO_SOAK_RUNS says (default 2,000 sequences per backend).
ExUnit.start(capture_log: true, exclude: [:soak])

# :telemetry comes with Plug (an optional dependency, so this library's app
# does not start it). Apps that have it run it; so do the tests, or every
# event would log that its handler table is missing.
{:ok, _} = Application.ensure_all_started(:telemetry)
