#!/usr/bin/env bash
# Benchmark: a wiped /var/gavo brought back by `vespa-agent rebuild` and by the same steps typed
# by hand, in turn on one node booted under systemd-nspawn; prints a table with medians.
# Needs root and what the test command installs (scripts/test.sh). VESPA_BENCH_ROUNDS=3 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -p vespa-agent
exec cargo test --locked -p vespa-agent-tests --test rebuild bench_wiped_var_gavo_agent_against_by_hand -- \
    --ignored --nocapture --test-threads=1
