"""Memory of the 1-doc Flow (gateway + 2 executors): meshflow's meshes against Jina 3.x.

Issue 18 asks for the Envoy mesh's summed peak RSS and PSS to be no higher than Jina's. One
run measures, side by side:

- ``Flow(mesh=M).add(uses=Noop).add(uses=Noop)`` for M in direct and envoy, and the Envoy
  mesh with one Envoy for the Flow (``envoy-host``: ``envoy_proxy='host'``), each with its
  Python processes forked from the fork server (the default) and started fresh
  (``<mesh>/fresh``: ``fork_server=False``), after 1-doc
  requests (over gRPC at concurrency 1 and 32, from a separate client process): each
  process's peak RSS (VmHWM), RSS split into anonymous and file-backed pages, and PSS
  (shared pages divided among the processes that map them), and the sums;
- an Envoy with an empty configuration (the floor of any sidecar: the binary's pages it
  touches to start, its heap);
- Jina's same Flow after the same 1-doc load (``run_jina_flow.sh --cases 1-doc``, in its
  loopback-only namespace): the sums over its gateway and executors (its orchestrator, the
  Flow's own process, is left out on both sides).

PSS depends on every process of the machine that maps the same files (other Envoys, other
Pythons): run it on an otherwise idle machine::

    .venv/bin/python benchmarks/memory_bench.py [--duration 3] [--skip-jina]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _load  # noqa: E402
from http_bench import MESHES, mesh_options  # noqa: E402

from meshflow import Document, DocumentArray, Executor, Flow, requests  # noqa: E402
from meshflow.client.messages import build_request  # noqa: E402
from meshflow.mesh.sidecar import envoy_binary  # noqa: E402
from meshflow.wire import GATEWAY_POST  # noqa: E402


class Noop(Executor):
    """Looks at every document and changes nothing."""

    @requests
    def noop(self, docs: DocumentArray, **kwargs: Any) -> None:
        for _ in docs:
            pass


def rollup(pid: int) -> dict[str, float]:
    """Peak RSS, RSS, its anonymous and file-backed parts and PSS of one process, in MB."""
    out = {"hwm_mb": round(_load.vm_kb(pid) / 1024, 1)}
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[key] = int(value.split()[0])
    out["rss_mb"] = round(fields["Rss"] / 1024, 1)
    out["anon_mb"] = round(fields.get("Anonymous", 0) / 1024, 1)
    out["file_mb"] = round((fields["Rss"] - fields.get("Anonymous", 0)) / 1024, 1)
    out["pss_mb"] = round(fields["Pss"] / 1024, 1)
    return out


def measure_meshflow(
    mesh: str, args: argparse.Namespace, tmp: str, fork_server: bool = True
) -> dict[str, Any]:
    payload = os.path.join(tmp, "1-doc.bin")
    with open(payload, "wb") as fh:
        fh.write(build_request("/", DocumentArray([Document(text="hello world")]))[1])
    options = mesh_options(mesh)
    flow = Flow(workspace=os.path.join(tmp, mesh), fork_server=fork_server, **options)
    flow.add(uses=Noop).add(uses=Noop)
    started = time.perf_counter()
    with flow:
        startup = time.perf_counter() - started
        pids = dict(flow.pids)
        for conc in (1, 32):
            row = _load.measure_case(
                bench=f"meshflow-{mesh}",
                case="1-doc",
                docs_per_req=1,
                target=f"127.0.0.1:{flow.port}",
                method=GATEWAY_POST,
                payload_path=payload,
                concurrency=conc,
                duration=args.duration,
                warmup=0.5,
                server_pids=list(pids.values()),
            )
            assert row["errors"] == 0, row["first_error"]
        per = {name: rollup(pid) for name, pid in pids.items()}
    return {
        "mesh": mesh,
        "fork_server": fork_server,
        "startup_s": round(startup, 2),
        "processes": per,
        **{
            f"{key}_sum_mb": round(sum(p[key + "_mb"] for p in per.values()), 1)
            for key in ("hwm", "rss", "anon", "file", "pss")
        },
    }


def empty_envoy(tmp: str) -> dict[str, float]:
    config = os.path.join(tmp, "empty.yaml")
    with open(config, "w", encoding="ascii") as fh:
        fh.write("static_resources: {listeners: [], clusters: []}\n")
    cmd = [envoy_binary(), "-c", config, "--concurrency", "1", "--disable-hot-restart"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.0)
        return rollup(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def measure_jina(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        "bash",
        os.path.join(HERE, "run_jina_flow.sh"),
        "--cases",
        "1-doc",
        "--repeat",
        "1",
        "--duration",
        str(args.duration),
        "--warmup",
        "0.5",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"Jina failed ({out.returncode}): {out.stderr[-2000:]}")
    for line in out.stdout.splitlines():
        if line.startswith("{") and '"summary": true' in line:
            data = json.loads(line)
            return {
                "hwm_sum_mb": data["flow_peak_rss_sum_mb"],
                "pss_sum_mb": data["flow_pss_sum_mb"],
                "orchestrator_peak_rss_mb": data["orchestrator_peak_rss_mb"],
                "startup_s": data["startup_s"],
                "versions": data["versions"],
            }
    raise SystemExit("no summary line from the Jina run")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=3.0, help="seconds of load per case")
    p.add_argument("--skip-jina", action="store_true")
    p.add_argument(
        "--fork-server",
        choices=("on", "off", "both"),
        default="both",
        help="processes forked from the fork server (the default), started fresh, or both",
    )
    args = p.parse_args()
    kinds = {"on": (True,), "off": (False,), "both": (True, False)}[args.fork_server]
    tmp = tempfile.mkdtemp(prefix="meshflow-memory-bench-")
    try:
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "loadavg": os.getloadavg(),
            "empty_envoy": empty_envoy(tmp),
        }
        for mesh in MESHES:
            for forked in kinds:
                name = mesh if forked else f"{mesh}/fresh"
                report[name] = measure_meshflow(mesh, args, tmp, fork_server=forked)
        if not args.skip_jina:
            report["jina"] = measure_jina(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=1))
    print()
    names = [n for m in MESHES for n in (m, f"{m}/fresh")] + ["jina"]
    rows = [(n, report[n]) for n in names if n in report]
    print(f"{'':17} {'peak RSS sum':>13} {'PSS sum':>9} {'start-up':>9}")
    for name, data in rows:
        print(
            f"{name:17} {data['hwm_sum_mb']:>10} MB {data['pss_sum_mb']:>6} MB"
            f" {data['startup_s']:>7} s"
        )


if __name__ == "__main__":
    main()
