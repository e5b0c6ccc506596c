#!/usr/bin/env bash
# A long soak run (tests/tests/soak.rs): the daemon follows a commit and granule churn every few
# seconds for SECONDS (default 4 hours) against the real DaCHS, git server and WebDAV server;
# prints its RSS and open descriptors over time and the RSS slope. Needs what scripts/test.sh
# installs and starts (run it once first).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p vespa-agent
VESPA_SOAK_SECONDS="${SECONDS_TO_RUN:-14400}" exec cargo test --release --locked -p vespa-agent-tests --test soak -- --nocapture
