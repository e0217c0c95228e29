# `mix test --only soak` runs the property tests for as long as
# MICELIO_SOAK_RUNS says (default 2,000 sequences per backend).
ExUnit.start(capture_log: true, exclude: [:soak])
