"""What the Envoy mesh's two proxies per call cost, against one Envoy for the Flow.

Every call from the gateway to an executor crosses two Envoys with a sidecar per replica
(``envoy_proxy='sidecar'``, the default): the gateway's egress sidecar (routing, retries, load
balancing, mTLS origination) and the replica's ingress sidecar (mTLS termination), two
processes. ``envoy_proxy='host'`` runs the same listeners, clusters and mTLS in one Envoy for
the whole Flow, as Istio's ambient mode runs one proxy per node. This script measures both
on the same shape, side by side: a ``Flow(mesh='envoy', envoy_proxy=P)`` with one no-op
executor, loaded at the gateway's egress listener with the shard's cluster as authority,
exactly as the gateway sends its calls (so the gateway's own cost is left out).

The load is one process of ``--concurrency`` grpc.aio callers sending the executor's own
1-document ``Process`` request, closed loop, ``--duration`` seconds per round, the two Flows
alternating. Reports calls/s and the CPU per call of each Envoy process and of the executor
(``/proc`` utime + stime)::

    .venv/bin/python benchmarks/sidecar_topology_bench.py [--rounds 3] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from http_bench import Noop  # noqa: E402

from meshflow import Flow  # noqa: E402
from meshflow.proto.v1 import data_request_pb2  # noqa: E402
from meshflow.wire import EXECUTOR_PROCESS  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def _load(target: str, authority: str, duration: float, concurrency: int) -> int:
    request = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(request_id="bench", endpoint="/")
    )
    request.docs.add(id="d", text="hello world")
    data = request.SerializeToString()
    options = [("grpc.default_authority", authority)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(EXECUTOR_PROCESS)
        answer = data_request_pb2.DataRequest.FromString(await call(data, timeout=30))
        if answer.status.code != data_request_pb2.Status.OK:
            raise RuntimeError(f"the executor refused the call: {answer.status}")
        done = 0
        stop = time.monotonic() + duration

        async def caller() -> None:
            nonlocal done
            while time.monotonic() < stop:
                await call(data, timeout=30)
                done += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done


def measure(
    target: str, authority: str, pids: dict[str, int], args: argparse.Namespace
) -> dict[str, Any]:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    calls = asyncio.run(_load(target, authority, args.duration, args.concurrency))
    after = {name: cpu_seconds(pid) for name, pid in pids.items()}
    per_call = {name: (after[name] - before[name]) / calls * 1e6 for name in pids}
    return {"calls_s": calls / args.duration, "cpu_us_per_call": per_call}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--json-out", help="also write the rounds to this file")
    args = p.parse_args()
    folder = tempfile.mkdtemp(prefix="meshflow-topology-")
    flows = {
        proxy: Flow(mesh="envoy", envoy_proxy=proxy, workspace=os.path.join(folder, proxy)).add(
            uses=Noop, name="e0"
        )
        for proxy in ("sidecar", "host")
    }
    rows: list[dict[str, Any]] = []
    try:
        setups = {}
        for proxy, flow in flows.items():
            flow.start()
            described = flow.describe()
            replica = described["deployments"][0]["replicas"][0]
            gateway_envoy = described["gateway"]["sidecar"]["pid"]
            if proxy == "sidecar":
                envoys = {
                    "gateway sidecar": gateway_envoy,
                    "replica sidecar": replica["sidecar"]["pid"],
                }
            else:
                envoys = {"one Envoy": gateway_envoy}  # the replica's listener is in it
            watched = {**envoys, "executor": replica["executor"]["pid"]}
            setups[proxy] = (
                described["gateway"]["sidecar"]["listener"],
                replica["cluster"],
                watched,
            )
        for rnd in range(1, args.rounds + 1):
            for proxy, (target, authority, watched) in setups.items():
                row = {"setup": proxy, "round": rnd, **measure(target, authority, watched, args)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        for flow in flows.values():
            flow.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n1-doc executor calls, c={args.concurrency}, median of {args.rounds} rounds:")
    for proxy in ("sidecar", "host"):
        mine = [r for r in rows if r["setup"] == proxy]
        names = list(mine[0]["cpu_us_per_call"])
        cells = ", ".join(
            f"{n} {statistics.median(r['cpu_us_per_call'][n] for r in mine):.0f} us" for n in names
        )
        envoys = statistics.median(
            sum(v for n, v in r["cpu_us_per_call"].items() if n != "executor") for r in mine
        )
        rate = statistics.median(r["calls_s"] for r in mine)
        print(
            f"  envoy_proxy={proxy!r:10} {rate:7.0f} calls/s; "
            f"Envoy CPU per call {envoys:.0f} us ({cells})"
        )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
