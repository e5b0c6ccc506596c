#!/bin/bash
# Builds (once) the Debian 12 rootfs the bootstrap test boots under systemd-nspawn: what an
# OpenStack Debian 12 cloud image starts with (debootstrap minbase, systemd, D-Bus, cloud-init),
# and nothing of VESPA. The test copies it for every run, so the cache stays clean.
#   sudo bash scripts/nspawn-rootfs.sh [DIR]    prints DIR
# DIR defaults to $VESPA_NSPAWN_CACHE/bookworm (VESPA_NSPAWN_CACHE=/var/cache/vespa-agent-tests).
# A rootfs whose stamp is missing (an interrupted build) is built again from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root
ensure_packages debootstrap systemd-container

DIR=${1:-${VESPA_NSPAWN_CACHE:-/var/cache/vespa-agent-tests}/bookworm}
# Bump when the recipe below changes, so that old caches are rebuilt.
RECIPE=1
STAMP=$DIR/.vespa-rootfs-$RECIPE
if [ -e "$STAMP" ]; then
  echo "$DIR"
  exit 0
fi

rm -rf "$DIR" "$DIR.new"
mkdir -p "$(dirname "$DIR")"
log "debootstrap --variant=minbase bookworm $DIR (about a minute)"
debootstrap --variant=minbase bookworm "$DIR.new" http://deb.debian.org/debian >/dev/null
# The security suite too: a VM installed today gets its PostgreSQL 15.20, which is what the
# template's pg_sphere fix is for.
cat > "$DIR.new/etc/apt/sources.list" <<'S'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
S
log "systemd, D-Bus and cloud-init in the rootfs"
systemd-nspawn --register=no --keep-unit -q -D "$DIR.new" --pipe /bin/sh -c \
  'export DEBIAN_FRONTEND=noninteractive
   apt-get -q update >/dev/null &&
   apt-get -y -q install --no-install-recommends systemd-sysv dbus curl ca-certificates procps cloud-init >/dev/null &&
   apt-get clean' </dev/null
# NoCloud only: the test seeds /var/lib/cloud/seed/nocloud; nothing probes a metadata service.
printf 'datasource_list: [ NoCloud, None ]\n' > "$DIR.new/etc/cloud/cloud.cfg.d/90-vespa-test.cfg"
rm -rf "$DIR.new/var/lib/cloud/instance" "$DIR.new/var/lib/cloud/instances"
touch "$DIR.new/.vespa-rootfs-$RECIPE"
mv "$DIR.new" "$DIR"
echo "$DIR"
