#!/bin/bash
# Lays the RustSec advisory database where deny.toml's db-path says, for
# `cargo deny --offline check advisories`: from $VESPA_ADVISORY_DB (a git bundle, or a clone),
# by default the snapshot in ../shared/rustsec/. Prints the snapshot's date; a snapshot older
# than 90 days is a warning, not a failure (the check still runs on what it knows).
#   bash scripts/advisory-db.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SRC=${VESPA_ADVISORY_DB:-../shared/rustsec/advisory-db.bundle}
# The folder name cargo-deny derives from the default URL https://github.com/rustsec/advisory-db.
DEST=target/advisory-dbs/advisory-db-3157b0e258782691
[ -e "$SRC" ] || die "no advisory database at $SRC (set VESPA_ADVISORY_DB to a bundle or clone of github.com/rustsec/advisory-db)"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
git -c init.defaultBranch=main clone -q "$SRC" "$DEST"
date=$(git -C "$DEST" show -s --format=%cI HEAD)
age=$(( ($(date +%s) - $(date -d "$date" +%s)) / 86400 ))
log "RustSec advisory database of $date ($age days old, $(git -C "$DEST" rev-parse --short HEAD))"
if [ "$age" -gt 90 ]; then
  log "warning: the advisory database is $age days old; refresh ../shared/rustsec/ for newer advisories"
fi
