#!/bin/bash
# The test command: installs what is missing, brings up the real peers, and runs every check.
#   sudo bash scripts/test.sh
# Steps: Debian build and test packages; PostgreSQL 15 + DaCHS 2.7 (scripts/setup-dachs.sh);
# cargo fmt --check; cargo clippy -D warnings; cargo test (unit tests, and integration tests that
# drive the real binary against the real DaCHS). With CI=true a test whose component is missing
# fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_rust rustfmt clippy

log "build and test packages"
# build-essential, pkg-config, libssl-dev: the C parts of the dependencies (SQLite, OpenSSL).
# prometheus: promtool, which lints what /metrics serves.
ensure_packages build-essential pkg-config libssl-dev curl ca-certificates prometheus

log "PostgreSQL 15 and DaCHS 2.7"
bash scripts/setup-dachs.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
cargo test --workspace --locked
