#!/bin/bash
# Memory of `vespa-agent run` beside prometheus-node-exporter (Debian), measured in the same run on
# the same machine: the agent should cost no more than the exporter every node already has. The
# agent is as on a node: it follows a service repository (the example, as resource vb_footprint,
# its granules from examples/granules) and has applied it to the harness's DaCHS.
# Prints a table of median RSS (and PSS) over several samples, idle and after 200 scrapes each,
# and SUMMARY lines for scripts/bench.sh.
#   sudo bash scripts/bench-footprint.sh [SAMPLES]
# VESPA_AGENT_BIN=PATH measures that binary instead of a fresh release build (to compare builds).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_rust
ensure_packages prometheus-node-exporter curl git
SAMPLES=${1:-7}
NAME=vb_footprint

AGENT_BIN=${VESPA_AGENT_BIN:-}
if [ -z "$AGENT_BIN" ]; then
  cargo build --release --locked -q -p vespa-agent
  AGENT_BIN=target/release/vespa-agent
fi
bash scripts/setup-dachs.sh >/dev/null
T=$(mktemp -d)
drop() {
  runuser -u dachsroot -- dachs drop "$NAME/q" >/dev/null 2>&1 || true
  rm -rf "/var/gavo/inputs/$NAME"
}
trap 'kill $AGENT $NODE 2>/dev/null || true; drop; rm -rf "$T"' EXIT
drop
# The example as the followed repository, as a provider's would be.
mkdir -p "$T/repo/$NAME"
sed "s/epnlab/$NAME/g" examples/service/epnlab/q.rd >"$T/repo/$NAME/q.rd"
printf '[[resource]]\ndir = "%s"\n[[resource.collection]]\nname = "granules"\nsource = "%s"\ninclude = ["*.csv"]\n' \
  "$NAME" "$PWD/examples/granules/epnlab" >"$T/repo/vespa-service.toml"
git -C "$T/repo" init -q -b main
git -C "$T/repo" add -A
git -C "$T/repo" -c user.name=bench -c user.email=bench@example.org commit -q -m service
AP=$((20000 + RANDOM % 5000)); NP=$((AP + 1))
mkdir -p "$T/etc"
# The product's interval (5 minutes): after its pass the agent waits as a node's does, which is
# when it lets go of the code it ran (agent/src/resident.rs).
printf '[agent]\nstate-dir = "%s/state"\n[http]\nlisten = "127.0.0.1:%s"\n[source]\nurl = "%s"\n' \
  "$T" "$AP" "$T/repo" >"$T/etc/agent.toml"
# Both with the environment systemd gives a unit (PATH and LANG only), as on a node: a shell's
# SSL_CERT_FILE, for one, would change where the agent reads its CAs from (agent/src/trust.rs).
UNIT_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
"${UNIT_ENV[@]}" "$AGENT_BIN" --config-dir "$T/etc" --vendor-config-dir "$T/x" --runtime-config-dir "$T/x" -q run &
AGENT=$!
"${UNIT_ENV[@]}" prometheus-node-exporter --web.listen-address=127.0.0.1:$NP >/dev/null 2>&1 &
NODE=$!
wait_for_url "http://127.0.0.1:$AP/healthz" 10 || die "agent did not start"
# Applied: /readyz answers 200 once DaCHS serves the followed commit.
wait_for_url "http://127.0.0.1:$AP/readyz" 120 || die "the agent did not apply the example within 120 s"
wait_for_url "http://127.0.0.1:$NP/metrics" 10 || die "node exporter did not start"
sleep 3

kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/${3:-status}"; }
pss() { awk '$1 == "Pss:" { print $2 }' "/proc/$1/smaps_rollup"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
sample() { # PID -> "rss_median pss_median" in KiB over SAMPLES samples, 1 s apart
  local r=() p=() i
  for ((i = 0; i < SAMPLES; i++)); do r+=("$(kb "$1" VmRSS)"); p+=("$(pss "$1")"); sleep 1; done
  echo "$(printf '%s\n' "${r[@]}" | median) $(printf '%s\n' "${p[@]}" | median)"
}
read -r a_rss a_pss < <(sample $AGENT)
read -r n_rss n_pss < <(sample $NODE)
for ((i = 0; i < 200; i++)); do
  curl -s -o /dev/null "http://127.0.0.1:$AP/metrics"
  curl -s -o /dev/null "http://127.0.0.1:$NP/metrics"
done
read -r a_rss2 a_pss2 < <(sample $AGENT)
read -r n_rss2 n_pss2 < <(sample $NODE)

# Where the agent's memory goes: PSS by mapping (its binary, heap, anonymous, each library) and
# its threads, so that a cut can be aimed and its gain seen.
detail() { # PID
  echo
  echo "where the agent's PSS goes (KiB); its threads: $(cat /proc/$1/task/*/comm | sort | uniq -c | xargs)"
  awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "" ? "[anonymous]" : $6 ~ /vespa-agent$/ ? "(the agent binary)" : $6) }
       $1 == "Pss:" { pss[name] += $2 }
       $1 == "Private_Dirty:" { dirty[name] += $2 }
       END { for (n in pss) if (pss[n] > 0) printf "%8d %8d  %s\n", pss[n], dirty[n], n }' "/proc/$1/smaps" |
    sort -rn | head -12 | awk 'BEGIN { print "     PSS    dirty  mapping" } { print }'
}
detail $AGENT

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '\n%-28s %12s %12s %16s %16s\n' "process (median of $SAMPLES)" "RSS idle" "PSS idle" "RSS 200 scrapes" "PSS 200 scrapes"
printf '%-28s %9s KiB %9s KiB %13s KiB %13s KiB\n' "vespa-agent run" "$a_rss" "$a_pss" "$a_rss2" "$a_pss2"
printf '%-28s %9s KiB %9s KiB %13s KiB %13s KiB\n' "prometheus-node-exporter" "$n_rss" "$n_pss" "$n_rss2" "$n_pss2"
printf '%-28s %12s %12s %16s %16s\n' "ratio agent / exporter" "$(ratio "$a_rss" "$n_rss")" "$(ratio "$a_pss" "$n_pss")" "$(ratio "$a_rss2" "$n_rss2")" "$(ratio "$a_pss2" "$n_pss2")"
summary() { # measure agent anchor anchor_is unit
  printf 'SUMMARY {"measure": "%s", "agent": %s, "anchor": %s, "anchor_is": "%s", "unit": "%s"}\n' "$@"
}
summary footprint_pss "$a_pss2" "$n_pss2" "prometheus-node-exporter after 200 scrapes" KiB
summary footprint_rss "$a_rss2" "$n_rss2" "prometheus-node-exporter after 200 scrapes" KiB
