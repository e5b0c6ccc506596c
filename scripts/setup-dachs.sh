#!/bin/bash
# Bring up PostgreSQL 15 and GAVO DaCHS 2.7 on this Debian 12 machine, without systemd, and start
# the DaCHS server on 127.0.0.1:8080. Idempotent: a re-run on a set-up machine takes a second.
# Used by the test command, the demo command and (later) the node rebuild; see
# ../shared/dachs/README.md for the traps each step avoids.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root

DACHS_PORT=${DACHS_PORT:-8080}

# 1. PostgreSQL first: gavodachs2-server's postinst needs a running server (createdb, dachs init),
#    and policy-rc.d keeps apt from starting it in a container.
ensure_packages postgresql-15 postgresql-15-pgsphere curl ca-certificates
pg_ctlcluster 15 main status >/dev/null 2>&1 || pg_ctlcluster 15 main start

# 2. Fix A: bookworm's pg_sphere 1.1.1 cannot be created on PostgreSQL >= 15.19 (bookworm-security
#    ships 15.20): "commutator operator @> is already the commutator of operator <@". Removing the two
#    obsolete DaCHS compatibility operators from the extension script keeps the security updates.
#    Idempotent: the range is empty once deleted.
sed -i '/^-- a minimal set of backwards-compatible operators for GAVO DaCHS/,/^-- debugging/{/^-- debugging/!d}' \
  /usr/share/postgresql/15/extension/pg_sphere--1.2.0.sql

# 3. DaCHS. If the postinst failed half-way on an earlier run, finish it.
if ! is_installed gavodachs2-server; then
  ensure_packages gavodachs2-server || dpkg --configure -a
fi
is_installed gavodachs2-server || die "gavodachs2-server did not install; see apt's output above"

# 4. /etc/gavo.rc. The agent renders the managed keys of this file once it applies a service
#    (issue 4); until then the harness writes a complete one. The admin password is needed by
#    `dachs serve expireRDs`; it is generated once and kept across re-runs.
if ! grep -q '^adminpasswd:' /etc/gavo.rc 2>/dev/null; then
  pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  umask 077
  cat > /etc/gavo.rc <<RC
[general]
rootDir: /var/gavo
logLevel: info

[web]
serverURL: http://localhost:${DACHS_PORT}
bindAddress: 127.0.0.1
serverPort: ${DACHS_PORT}
user: gavo
sitename: vespa-agent test node
adminpasswd: ${pw}

[ivoa]
authority: vespa-agent.test
RC
  umask 022
  chmod 0644 /etc/gavo.rc   # DaCHS reads it as user gavo and dachsroot
fi

# 5. Offline stub of the UAT vocabulary: `dachs val` of an ivo_managed RD would otherwise try to
#    download it and fail with "No such vocabulary: uat".
UAT='/var/gavo/cache/http:=2F=2Fwww.ivoa.net=2Frdf=2Fuat'
if [ ! -s "$UAT" ]; then
  mkdir -p /var/gavo/cache
  cat > "$UAT" <<'J'
{"uri": "http://www.ivoa.net/rdf/uat", "flavour": "SKOS", "terms": {
 "solar-system-astronomy": {"label": "Solar system astronomy", "description": "", "wider": [], "narrower": []},
 "planetary-science": {"label": "Planetary science", "description": "", "wider": [], "narrower": []},
 "exoplanet-astronomy": {"label": "Exoplanet astronomy", "description": "", "wider": [], "narrower": []},
 "solar-physics": {"label": "Solar physics", "description": "", "wider": [], "narrower": []}}}
J
  chown dachsroot:gavo "$UAT"
fi

# 6. The server: daemonizes, drops to user gavo.
avail="http://127.0.0.1:${DACHS_PORT}/tap/availability"
if ! curl -sf -o /dev/null "$avail"; then
  log "starting DaCHS on port ${DACHS_PORT}"
  dachs serve start >/dev/null 2>&1 || true
  wait_for_url "$avail" 30 || die "DaCHS did not answer on $avail within 30 s; see /var/gavo/logs/server.stderr"
fi
curl -sf "$avail" | grep -q '<avl:available>true' || die "DaCHS says it is not available ($avail)"
log "DaCHS 2.7 serving on http://127.0.0.1:${DACHS_PORT}/tap"
