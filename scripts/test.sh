#!/bin/bash
# The test command: installs what is missing, brings up the real peers, and runs every check.
#   sudo bash scripts/test.sh
# Steps: Debian build and test packages; PostgreSQL 15 + DaCHS 2.7 (scripts/setup-dachs.sh);
# cargo fmt --check; mandoc lint of man/; cargo deny; cargo clippy -D warnings; cargo test (unit tests, and
# integration tests that drive the real binary against the real DaCHS and a real smart-HTTP git
# server; agent/tests/delivery.rs builds the .deb, lints it, and boots a Debian 12 under
# systemd-nspawn that cloud-init turns into a serving node). With CI=true a test whose component
# is missing fails instead of skipping. Last, cargo fuzz runs each parser's fuzz target for
# FUZZ_SECONDS (15).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_rust rustfmt clippy

log "build and test packages"
# build-essential, pkg-config, libssl-dev: the C parts of the dependencies (SQLite, OpenSSL).
# prometheus: promtool, which lints what /metrics serves.
# git, nginx-light, fcgiwrap, apache2-utils: a GitLab-like smart-HTTP git server with token auth.
# openssh-client, gnupg, gpgv: signing test commits and verifying them, as the agent does.
# mandoc: lints the man pages. apache2: mod_dav, the B2SAFE/Davrods stand-in for granules.
# rclone: the second WebDAV server. cloud-init, gettext-base: checks the cloud-init template.
# lintian: checks the .deb. systemd-container, debootstrap: the bootstrap test boots a Debian 12
# under systemd-nspawn (scripts/nspawn-rootfs.sh builds and caches its rootfs).
ensure_packages build-essential pkg-config libssl-dev curl ca-certificates prometheus \
  git nginx-light fcgiwrap apache2-utils openssh-client gnupg gpgv openssl mandoc apache2 \
  rclone cloud-init gettext-base lintian systemd-container debootstrap
# cargo-deb builds the .deb; cargo-deny checks the dependency tree. Both are on crates.io.
ensure_cargo_tool cargo-deb 3.8.0
ensure_cargo_tool cargo-deny 0.20.2
# cargo-fuzz: coverage-guided fuzzing of the parsers (scripts/fuzz.sh), bounded here.
ensure_cargo_tool cargo-fuzz 0.13.2

# A demo agent (scripts/demo.sh) converges the same DaCHS, /etc/gavo.rc included, every minute;
# it would fight the tests that change them.
DEMO_PID=/var/tmp/vespa-agent-demo/agent.pid
if [ -s "$DEMO_PID" ] && kill -0 "$(cat "$DEMO_PID")" 2>/dev/null; then
  log "stopping the demo agent (pid $(cat "$DEMO_PID")); scripts/demo.sh starts it again"
  kill -TERM "$(cat "$DEMO_PID")"
  for _ in $(seq 50); do kill -0 "$(cat "$DEMO_PID")" 2>/dev/null || break; sleep 0.1; done
fi

log "PostgreSQL 15 and DaCHS 2.7"
bash scripts/setup-dachs.sh

log "cargo fmt --check"
cargo fmt --all -- --check

log "man pages (mandoc -T lint -W warning)"
mandoc -T lint -W warning man/*.[1-9]

log "cargo deny (licenses, bans, sources; deny.toml says why not advisories)"
cargo deny --offline --locked check licenses bans sources

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
# --no-fail-fast: one run reports every failing test binary, not only the first. The proof's
# figures (crash, faults, fuzz, secrets, soak) are collected in target/vespa-proof.txt and shown
# at the end, pass or fail.
rm -f target/vespa-proof.txt
status=0
cargo test --workspace --locked --no-fail-fast || status=$?

log "cargo fuzz: every parser of outside input, ${FUZZ_SECONDS:-15} s each (coverage-guided)"
FUZZ_BUILD=dev SECONDS_PER_TARGET="${FUZZ_SECONDS:-15}" CASES=0 bash scripts/fuzz.sh || status=$?
if [ -s target/vespa-proof.txt ]; then
  log "the proof's figures"
  cat target/vespa-proof.txt
fi
exit "$status"
