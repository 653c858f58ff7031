#!/usr/bin/env bash
# The peer comparison (bench/peers/README.md): N recorded actions appended,
# then the whole log verified, on agentledger-llm, agentmesh-platform and
# Mandate (library and server); a Markdown table on stdout, the raw figures
# in target/peers/results.json.
#
#   bench/peers/run.sh [N] [RUNS]      # defaults: N = 100000, RUNS = 1
set -euo pipefail
cd "$(dirname "$0")/../.."

entries=${1:-100000}
runs=${2:-1}
venv=target/peers-venv

# The peers, pinned, in a virtual environment of their own.
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/peers/requirements.txt

# PEERS_NO_BUILD=1 uses the binaries already built (when the tree does not
# build at the moment, say).
if [ -z "${PEERS_NO_BUILD:-}" ]; then
    cargo build --release --quiet -p mandate --bin mandate --example peer_workload
fi

mkdir -p target/peers
echo "machine: $(nproc) CPUs; load average: $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ)" >&2
exec "$venv/bin/python" bench/peers/run.py --entries "$entries" --runs "$runs" \
    --python "$venv/bin/python" \
    --mandate target/release/mandate \
    --example target/release/examples/peer_workload \
    --work target/peers
