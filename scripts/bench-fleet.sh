#!/bin/bash
# A thousand nodes following one repository on one git smart-HTTP server (tests/benches/fleet.rs):
# requests per second and server CPU while idle and during a push wave, the time until the last
# node has a push (and with a webhook to a tenth), and the retry herd after the server was down.
# Its last line: `fleet: nodes=N interval_s=I req_per_s=X converge_s=Y`; the second-by-second
# curve after the outage is in target/bench/fleet-curve.tsv. About 10 minutes at the defaults.
#   sudo bash scripts/bench-fleet.sh
#   VESPA_FLEET_NODES=200 VESPA_FLEET_INTERVAL=20 VESPA_FLEET_OUTAGE=20 bash scripts/bench-fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_rust
ensure_packages nginx-light fcgiwrap apache2-utils git openssl
cargo bench --locked -q -p vespa-agent-tests --bench fleet
