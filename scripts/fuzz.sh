#!/usr/bin/env bash
# A long fuzzing session of every parser of outside input (agent/tests/fuzz.rs): CASES inputs per
# target (default 1,000,000; the test command runs 2,000). A failure is saved in
# agent/tests/fuzz-corpus/regressions.txt and replayed first by every later run: commit it.
set -euo pipefail
cd "$(dirname "$0")/.."
VESPA_FUZZ_CASES="${CASES:-1000000}" exec cargo test --release --locked --test fuzz -- --nocapture
