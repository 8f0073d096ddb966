#!/usr/bin/env bash
# Run benchmarks/jina_flow.py in the Jina venv, inside a loopback-only network
# namespace (Jina looks up its public IP and sends telemetry otherwise).
# Needs root (unshare -n). Extra arguments go to jina_flow.py.
#   MESHFLOW_BENCH_JINA_VENV  venv path (default /tmp/meshflow-bench-jina), created if missing
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(bash "$HERE/_jina_env.sh" | tail -n 1)"
export JINA_OPTOUT_TELEMETRY=1 JINA_HIDE_SURVEY=1 JINA_DEFAULT_HOST=127.0.0.1
exec unshare -n bash -c 'ip link set lo up && exec "$0" "$@"' \
    "$VENV/bin/python" "$HERE/jina_flow.py" "$@"
