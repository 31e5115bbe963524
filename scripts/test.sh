#!/usr/bin/env bash
# Everything CI checks, in order: setup (packages + .venv), lint, format, types, tests.
# The tests include the integration tests: they start their own Mosquitto and InfluxDB on
# free ports. Extra arguments go to pytest (e.g. ./scripts/test.sh -x tests/ingest).
# Exits non-zero when any step fails, and says which ones did.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
failed=()

step() {
    local name="$1"
    shift
    printf '\n== %s\n' "$name"
    if "$@"; then
        return 0
    fi
    printf 'test: step FAILED: %s\n' "$name" >&2
    failed+=("$name")
    return 1
}

# Without packages and a venv nothing else can run.
step "setup" ./scripts/setup.sh --for-tests || exit 1

step "ruff check" "$BIN/ruff" check .
step "ruff format --check" "$BIN/ruff" format --check .
step "mypy" "$BIN/mypy"
step "pytest" "$BIN/pytest" -q "$@"

if [ "${#failed[@]}" -gt 0 ]; then
    printf '\ntest: FAILED: %s\n' "$(IFS=,; printf '%s' "${failed[*]}" | sed 's/,/, /g')" >&2
    exit 1
fi
printf '\ntest: all steps passed\n'
