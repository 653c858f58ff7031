#!/usr/bin/env bash
# Runs the Python SDK's tests against a real `mandate serve` built from this
# repository: creates (or reuses) a virtualenv, installs the pinned test
# dependencies and the SDK itself (as `pip install ./sdk/python` would), then
# runs pytest. Exits non-zero when anything fails.
#
# Environment:
#   MANDATE_SDK_VENV  the virtualenv (default: sdk/python/.venv)
#   MANDATE_BIN       the server binary (default: <repo>/target/debug/mandate,
#                     built with `cargo build -p mandate` when missing)
#   PYTHON            the interpreter that creates the virtualenv (default: python3)
# Extra arguments are passed to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${MANDATE_SDK_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "sdk/python: creating $venv"
    "$python" -m venv "$venv"
fi

# Install the test dependencies only when their pins changed.
stamp="$venv/.mandate-test-deps"
wanted="$(cat "$here/constraints.txt" "$here/requirements-test.txt" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]]; then
    echo "sdk/python: installing the pinned test dependencies"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c "$here/constraints.txt" -r "$here/requirements-test.txt"
    echo "$wanted" > "$stamp"
fi

# The SDK itself, freshly, from its own directory.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-deps --no-build-isolation --force-reinstall "$here"

if [[ -z "${MANDATE_BIN:-}" && ! -x "$repo/target/debug/mandate" ]]; then
    echo "sdk/python: building the server (cargo build -p mandate)"
    (cd "$repo" && cargo build -p mandate)
fi

cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
