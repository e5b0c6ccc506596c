# Shared helpers for the set-up scripts: sourced, never run.
# Every script that installs something must work on a fresh Debian 12 machine (CI starts from one),
# so packages are installed here by name, and only when missing.

APT=(apt-get -o DPkg::Lock::Timeout=900 -o Dpkg::Options::=--force-confold -y -q)
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "$0 installs Debian packages and must run as root"
}

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

_apt_updated=""
# ensure_packages PKG...: install the named Debian packages that are not installed yet.
ensure_packages() {
  local missing=() p
  for p in "$@"; do is_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$_apt_updated" ]; then
    log "apt-get update"
    "${APT[@]}" update >/dev/null
    _apt_updated=1
  fi
  log "installing ${missing[*]}"
  "${APT[@]}" install --no-install-recommends "${missing[@]}" >/dev/null
}

# wait_for_url URL SECONDS: poll until the URL answers 2xx.
wait_for_url() {
  local url=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    curl -sf -o /dev/null "$url" && return 0
    sleep 0.1
  done
  return 1
}

# ensure_rust [COMPONENT...]: cargo (and the named rustup components) on PATH. Rust comes from
# rustup: Debian 12's rustc 1.63 is too old for the dependencies, and rustup's toolchains are not
# on the package registries, so a missing one is reported, not installed.
ensure_rust() {
  export PATH="$HOME/.cargo/bin:$PATH"
  command -v cargo >/dev/null || die "cargo not found: install Rust >= 1.95 with rustup"
  local c
  for c in "$@"; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || die "the rustup component $c is missing: rustup component add $c"
  done
}

# ensure_cargo_tool NAME VERSION: `cargo install NAME@VERSION --locked` unless that version is
# already on PATH.
ensure_cargo_tool() {
  local name=$1 version=$2
  if "$name" --version 2>/dev/null | grep -qF "$version"; then
    return 0
  fi
  log "cargo install $name@$version"
  cargo install --locked --quiet "$name@$version"
}
