#!/bin/bash
# Every side-by-side comparison of the agent in one run, on the same servers and machine: granule
# transfers over WebDAV beside rclone and beside the server's own limit (curl over keep-alive, and
# curl then fsync: the durable limit); the service repository beside git fetch; a pass adding 10
# granules beside `dachs imp -c` alone; /metrics beside prometheus-node-exporter; memory beside
# node_exporter; a wiped /var/gavo rebuilt beside the same steps by hand (when a node can boot);
# and (full run only) a thousand nodes polling one git server (scripts/bench-fleet.sh).
# Prints one table of medians and ratios (agent / anchor) with the goals of issue 19, and writes
# the same as JSON to target/bench/summary.json; each bench's own table is in target/bench/*.log.
#   sudo bash scripts/bench.sh [--quick]      (--quick: smaller sizes, no rebuild or fleet, < 10 minutes)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_rust
# The servers the benches start (Apache mod_dav, nginx + git http-backend) and their rivals.
ensure_packages apache2 apache2-utils nginx-light fcgiwrap rclone curl git prometheus-node-exporter
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT/summary.json"

if [ $QUICK = 1 ]; then
  export VESPA_BENCH_SMALL=2000 VESPA_BENCH_LARGE=2 VESPA_BENCH_LARGE_MB=64 VESPA_BENCH_RESCAN=10000
  export VESPA_BENCH_GRANULES=10000 VESPA_BENCH_SCRAPES=300 VESPA_BENCH_RUNS=3
  SAMPLES=3
else
  export VESPA_BENCH_SMALL=2000 VESPA_BENCH_LARGE=2 VESPA_BENCH_LARGE_MB=256 VESPA_BENCH_RESCAN=100000
  export VESPA_BENCH_GRANULES=100000 VESPA_BENCH_SCRAPES=1000 VESPA_BENCH_RUNS=3 VESPA_BENCH_ROUNDS=3
  SAMPLES=7
fi

bash scripts/setup-dachs.sh >/dev/null || die "DaCHS could not be set up"
# The benches run the release binary, and refuse one older than its sources.
cargo build --release --locked -q -p vespa-agent || die "the release build failed"

FAILED=()
step() { # name command...: its output into $OUT/name.log, its time on the terminal
  local name=$1 t0=$SECONDS
  shift
  log "$name"
  if "$@" >"$OUT/$name.log" 2>&1; then
    echo "    $((SECONDS - t0)) s"
  else
    echo "    FAILED after $((SECONDS - t0)) s: see $OUT/$name.log"
    FAILED+=("$name")
  fi
}
bench() { cargo bench --locked -q -p vespa-agent-tests --bench "$1"; }

step transfers bench granules
step source bench source
step import bench import
step scrape bench scrape
step footprint bash scripts/bench-footprint.sh "$SAMPLES"
if [ $QUICK = 0 ]; then
  step fleet bash scripts/bench-fleet.sh
  if command -v systemd-nspawn >/dev/null; then
    step rebuild bash scripts/bench-rebuild.sh
  else
    echo "rebuild: not measured (no systemd-nspawn to boot a node)"
  fi
fi

python3 - "$OUT" "$QUICK" <<'PY'
import json, os, sys
out, quick = sys.argv[1], sys.argv[2] == "1"
# The goals of issue 19: agent / anchor at most this.
goals = {"small_files": 1.25, "large_files": 1.10, "footprint_pss": 0.60,
         "incremental_100k": 1.10, "rebuild": 1.15,
         # Issue 20: requests a second against 20, the last node's time against the bound.
         "fleet_req_per_s": 1.0, "fleet_converge": 1.0}
rows = {}
for name in sorted(os.listdir(out)):
    if not name.endswith(".log"):
        continue
    for line in open(os.path.join(out, name), errors="replace"):
        if line.startswith("SUMMARY "):
            m = json.loads(line[len("SUMMARY "):])
            m["ratio"] = round(m["agent"] / m["anchor"], 3) if m["anchor"] else None
            rows[m.pop("measure")] = m
summary = {k: dict(v, goal=goals.get(k)) for k, v in rows.items()}
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, sort_keys=True)
    f.write("\n")
print()
print("vespa-agent against its anchors%s, medians (target/bench/summary.json)" % (" (--quick sizes)" if quick else ""))
print(f"{'measure':<22} {'agent':>12} {'anchor':>12} {'ratio':>7} {'goal':>7}  anchor")
for k, v in sorted(rows.items()):
    goal = goals.get(k)
    met = "" if goal is None or v["ratio"] is None else (" ok" if v["ratio"] <= goal else " NOT MET")
    unit = v["unit"]
    print(f"{k:<22} {v['agent']:>9.3f} {unit:<2} {v['anchor']:>9.3f} {unit:<2} {v['ratio']:>7.2f} "
          f"{'' if goal is None else f'<= {goal:.2f}':>7}{met}  {v['anchor_is']}")
missing = [g for g in goals if g not in rows]
if missing:
    print("not measured in this run: " + ", ".join(missing))
PY
if [ ${#FAILED[@]} -gt 0 ]; then
  die "failed: ${FAILED[*]}"
fi
