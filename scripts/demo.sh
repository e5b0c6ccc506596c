#!/bin/bash
# The main job on the embedded default, on this machine:
#   sudo bash scripts/demo.sh
# Installs and starts PostgreSQL 15 + DaCHS 2.7 (scripts/setup-dachs.sh), builds the agent, makes
# the example service repository (examples/service) a local git repository and the example
# granules (examples/granules) a local collection, runs `vespa-agent run` in the background
# following that repository, with its configuration and state under $DEMO_DIR, waits until it is
# ready, and prints where to look. Re-running it commits any change to examples/service and
# restarts the agent.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_rust

DEMO_DIR=${DEMO_DIR:-/var/tmp/vespa-agent-demo}
PORT=${AGENT_PORT:-9471}
DACHS=http://127.0.0.1:8080

ensure_packages build-essential pkg-config libssl-dev curl ca-certificates git
bash scripts/setup-dachs.sh

# The provider's side: the service repository (here a local git repository standing in for
# GitLab) and the granule collection it names (here a local directory standing in for B2SAFE).
REPO=$DEMO_DIR/service
GRANULES=/srv/vespa-example/granules
log "service repository $REPO, granules $GRANULES"
mkdir -p "$REPO" "$GRANULES"
cp -r examples/granules/. "$GRANULES/"
demo_git() {
  git -C "$REPO" -c user.name="VESPA demo" -c user.email=demo@localhost \
    -c init.defaultBranch=main "$@"
}
[ -d "$REPO/.git" ] || demo_git init -q
cp -r examples/service/. "$REPO/"
demo_git add -A
demo_git diff --cached --quiet HEAD 2>/dev/null || demo_git commit -q -m "the example service"

log "building vespa-agent (release)"
cargo build --release --locked -q
BIN=$PWD/target/release/vespa-agent

if [ -s "$DEMO_DIR/agent.pid" ] && kill -0 "$(cat "$DEMO_DIR/agent.pid")" 2>/dev/null; then
  log "stopping the previous demo agent"
  kill -TERM "$(cat "$DEMO_DIR/agent.pid")"
  for _ in $(seq 50); do kill -0 "$(cat "$DEMO_DIR/agent.pid")" 2>/dev/null || break; sleep 0.1; done
fi
mkdir -p "$DEMO_DIR/etc/agent.d"
cat > "$DEMO_DIR/etc/agent.toml" <<TOML
# The demo node's configuration: everything in $DEMO_DIR.
[agent]
state-dir = "$DEMO_DIR/state"

[http]
listen = "127.0.0.1:$PORT"

[reconcile]
interval = "1m"
jitter = "5s"

[dachs]
url = "$DACHS"

[source]
url = "$REPO"
branch = "main"
TOML
# The same three directories as environment variables: the commands printed below stay short.
export VESPA_AGENT_CONFIG_DIR="$DEMO_DIR/etc" VESPA_AGENT_VENDOR_CONFIG_DIR="$DEMO_DIR/none" \
  VESPA_AGENT_RUNTIME_CONFIG_DIR="$DEMO_DIR/none"
A=("$BIN")
"${A[@]}" check-config >/dev/null

nohup "${A[@]}" run >"$DEMO_DIR/agent.log" 2>&1 &
echo $! >"$DEMO_DIR/agent.pid"
# The first pass deploys the example (dachs val, imp, expireRDs, pub) and imports its granules
# from the local collection: about 15 s.
wait_for_url "http://127.0.0.1:$PORT/readyz" 120 || {
  cat "$DEMO_DIR/agent.log" >&2
  die "the agent did not become ready; its log is above"
}

query="SELECT COUNT(*) AS granules FROM epnlab.epn_core"
answer=$(curl -sf "$DACHS/tap/sync" --data-urlencode REQUEST=doQuery --data-urlencode LANG=ADQL \
  --data-urlencode RESPONSEFORMAT=csv --data-urlencode "QUERY=$query" | tail -n 1 | tr -d '\r')

cat <<INFO

vespa-agent is running (pid $(cat "$DEMO_DIR/agent.pid")), converging this node every minute.
It deployed the example EPN-TAP service (examples/service) into DaCHS and imported its
granules from $GRANULES (add, change or delete a CSV there, then sync).
The commands below need this once in your shell:

  export VESPA_AGENT_CONFIG_DIR=$DEMO_DIR/etc VESPA_AGENT_VENDOR_CONFIG_DIR=$DEMO_DIR/none VESPA_AGENT_RUNTIME_CONFIG_DIR=$DEMO_DIR/none

  TAP service      $DACHS/tap
  sample ADQL      $query
  answer           $answer
  service repo     $REPO (branch main); commit there, then: $BIN sync
  applied          $DEMO_DIR/state/current -> $(readlink "$DEMO_DIR/state/current")
  agent status     $BIN status  (plan: what the next pass would change)
  metrics          http://127.0.0.1:$PORT/metrics
  health           http://127.0.0.1:$PORT/healthz  http://127.0.0.1:$PORT/readyz
  status (JSON)    http://127.0.0.1:$PORT/status
  reload config    kill -HUP $(cat "$DEMO_DIR/agent.pid")
  log              $DEMO_DIR/agent.log
  stop             kill $(cat "$DEMO_DIR/agent.pid")

INFO
"${A[@]}" status
