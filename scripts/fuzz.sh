#!/usr/bin/env bash
# Fuzzing of every parser of outside input, with the checks of agent/tests/fuzzing/mod.rs and the
# seeds of agent/tests/fuzz-corpus/<target>/, two ways:
#   - cargo-fuzz (libFuzzer, coverage-guided, AddressSanitizer): SECONDS_PER_TARGET (default 600);
#     it starts from the committed corpus fuzz/corpus/<target>/ and the seeds, keeps what it
#     learns in target/fuzz-corpus/<target>/, and a crash in fuzz/artifacts/<target>/. With
#     MERGE=1 the inputs that reach new code are merged into fuzz/corpus/<target>/: commit them.
#   - proptest (agent/tests/fuzz.rs): CASES inputs per target (default 1,000,000); a failure is
#     saved in agent/tests/fuzz-corpus/regressions.txt and replayed first by every later run.
# Commit a crashing input as a new seed (or the regression line) with its fix.
#   bash scripts/fuzz.sh                  both, long (hours in all), optimised
#   FUZZ_BUILD=dev SECONDS_PER_TARGET=15 CASES=0 bash scripts/fuzz.sh
#                                         what the test command runs: cargo-fuzz only, unoptimised
#                                         (builds in half the time, runs a few times slower)
# The machine has one stable toolchain; cargo-fuzz's sanitizer flags are nightly-only, which the
# stable compiler accepts with RUSTC_BOOTSTRAP=1 (its AddressSanitizer runtime ships with stable).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_cargo_fuzz

per_target="${SECONDS_PER_TARGET:-600}"
build="--${FUZZ_BUILD:-release}"
cases="${CASES:-1000000}"
fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
proof=target/vespa-proof.txt
mkdir -p target

log "cargo fuzz build (AddressSanitizer, $build)"
fuzz build "$build"
status=0
for t in $(fuzz list); do
  work="target/fuzz-corpus/$t"
  mkdir -p "$work"
  log "cargo fuzz run $t ($per_target s)"
  out=$(mktemp)
  # New inputs go to the first directory; the committed corpus and seeds are only read.
  mkdir -p "fuzz/corpus/$t"
  if fuzz run "$build" "$t" "$work" "fuzz/corpus/$t" "agent/tests/fuzz-corpus/$t" -- \
    -max_total_time="$per_target" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$out" 2>&1; then
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$out" | tail -1)
    echo "FUZZ (libFuzzer) $t: ${runs:-?} executions in $per_target s, corpus $(ls "$work" | wc -l) inputs" |
      tee -a "$proof"
  else
    status=1
    tail -40 "$out"
    echo "FUZZ (libFuzzer) $t: FAILED, the input is in fuzz/artifacts/$t/" | tee -a "$proof"
  fi
  rm -f "$out"
  if [ "${MERGE:-0}" = 1 ]; then
    fuzz run "$build" "$t" "fuzz/corpus/$t" "$work" -- -merge=1 >/dev/null 2>&1
    log "fuzz/corpus/$t: $(ls "fuzz/corpus/$t" | wc -l) inputs"
  fi
done

if [ "$cases" -gt 0 ]; then
  log "proptest, $cases cases per target"
  VESPA_FUZZ_CASES="$cases" cargo test --release --locked -p vespa-agent --test fuzz -- --nocapture || status=1
fi
exit "$status"
