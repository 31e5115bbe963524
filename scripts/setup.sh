#!/usr/bin/env bash
# Prepare this machine for farmtel development, the demo and the tests. Idempotent.
#
#   - Debian packages: mosquitto, influxdb, socat (and python3-venv when venv is missing),
#     installed only when missing. With --for-tests also what only the tests need:
#     chromium (renders the export report) and systemd (systemd-analyze checks the units).
#     Works on Debian 12 and Raspberry Pi OS (bookworm), as root or through sudo.
#   - .venv in the repo with `pip install -e '.[dev]'`, redone only when pyproject.toml
#     changed (its hash is kept in .venv/.farmtel-pyproject.sha256).
#
# System services are left alone: the dev stack (python -m devstack) and the tests run
# private servers on free ports, so a system mosquitto on 1883 does not get in the way.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO="$(pwd)"
VENV="$REPO/.venv"
STAMP="$VENV/.farmtel-pyproject.sha256"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (run this script as root, or install sudo)"
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# -- Debian packages -----------------------------------------------------------------------
command -v dpkg-query >/dev/null 2>&1 || die "this script needs a Debian-based system (dpkg/apt)"
command -v python3 >/dev/null 2>&1 || die "python3 is missing: apt-get install python3"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); farmtel needs 3.11 or newer (Debian 12)"

for_tests=false
case "${1:-}" in
    --for-tests) for_tests=true ;;
    "") ;;
    *) die "unknown option ${1}; usage: scripts/setup.sh [--for-tests]" ;;
esac

wanted=(mosquitto influxdb socat)
# chromium: tests/certify render the export report headless. Not needed by the demo.
$for_tests && wanted+=(chromium)
missing=()
for pkg in "${wanted[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
# systemd-analyze checks the units in deploy/systemd (tests/deploy); a container may lack it.
if $for_tests && ! command -v systemd-analyze >/dev/null 2>&1; then
    missing+=("systemd")
fi
# Debian splits venv/ensurepip out of python3.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=("python3-venv")
fi

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"
else
    say "packages present: ${wanted[*]}"
fi

[ -x /usr/sbin/mosquitto ] || die "/usr/sbin/mosquitto is missing after install"
command -v influxd >/dev/null 2>&1 || die "influxd is missing after install"

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    say "note: the system mosquitto service is running (port 1883); farmtel's dev stack"
    say "      does not use it. To stop it: sudo systemctl disable --now mosquitto"
fi

# -- Python virtualenv ---------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
    rm -f "$STAMP"
fi

want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    say "installing farmtel and its dev tools into .venv (pyproject.toml changed)"
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    printf '%s\n' "$want" >"$STAMP"
else
    say ".venv is up to date with pyproject.toml"
fi
say "ready"
