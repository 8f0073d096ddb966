"""What the Envoy mesh's two proxies per call cost, and what one Envoy per host would cost.

Every call from the gateway to an executor crosses two Envoys today: the gateway's egress
sidecar (routing, retries, load balancing, mTLS origination) and the replica's ingress sidecar
(mTLS termination), two processes. Istio's ambient mode and Linkerd's per-node proxies run one
proxy per machine instead. This script measures both on the same executor, side by side:

* **split**: a real ``Flow(mesh='envoy')`` with one no-op executor; calls go to the gateway
  sidecar's egress socket with the shard's cluster as authority, exactly as the gateway
  sends them, then through the replica's sidecar to the executor;
* **one Envoy**: the same two configurations as meshflow wrote them (read from the Flow's run
  folder: the egress listener, its cluster with its health checks, outlier detection,
  retries and mTLS, the replica's ingress listener with its certificate and allowed peer,
  and its executor cluster) merged into one Envoy bootstrap, run with ``--concurrency 1``
  as the sidecars are; calls go to its egress socket, cross loopback TCP with mTLS into its
  own ingress listener, and reach the same executor process.

The load is one process of ``--concurrency`` grpc.aio callers sending the executor's own
1-document ``Process`` request, closed loop, ``--duration`` seconds per round, the two
setups alternating. Reports calls/s and the CPU per call of each Envoy process and of the
executor (``/proc`` utime + stime)::

    .venv/bin/python benchmarks/sidecar_topology_bench.py [--rounds 3] [--duration 8]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import grpc
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from http_bench import Noop  # noqa: E402

from meshflow import Flow  # noqa: E402
from meshflow.mesh.sidecar import envoy_binary  # noqa: E402
from meshflow.proto.v1 import data_request_pb2  # noqa: E402
from meshflow.wire import EXECUTOR_PROCESS  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def merged_bootstrap(
    gateway_config: str, replica_config: str, folder: str
) -> tuple[dict[str, Any], str]:
    """The gateway sidecar's and a replica sidecar's configurations (as meshflow wrote them)
    as one Envoy; returns it and its egress socket."""
    with open(gateway_config, encoding="utf-8") as fh:
        gateway = yaml.safe_load(fh)
    with open(replica_config, encoding="utf-8") as fh:
        replica = yaml.safe_load(fh)
    label = replica["node"]["id"]

    def named(section: str, config: dict[str, Any], name: str) -> dict[str, Any]:
        found = [x for x in config["static_resources"][section] if x["name"] == name]
        return copy.deepcopy(found[0])

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    egress_socket = os.path.join(folder, "egress.sock")
    egress = named("listeners", gateway, "egress")
    egress["address"]["pipe"]["path"] = egress_socket
    ingress = named("listeners", replica, "ingress")
    ingress["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": port}
    routes = ingress["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    for host in routes["virtual_hosts"]:
        for route in host["routes"]:
            route["route"]["cluster"] = f"executor {label}"
    shard = copy.deepcopy(
        next(c for c in gateway["static_resources"]["clusters"] if c.get("type") == "EDS")
    )
    del shard["eds_cluster_config"]
    shard["type"] = "STATIC"
    address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    shard["load_assignment"] = {
        "cluster_name": shard["name"],
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
    }
    executor = named("clusters", replica, "executor")
    executor["name"] = executor["load_assignment"]["cluster_name"] = f"executor {label}"
    bootstrap = {
        "node": {"id": "host", "cluster": "meshflow"},
        "admin": {"address": {"pipe": {"path": os.path.join(folder, "admin.sock")}}},
        "static_resources": {"listeners": [egress, ingress], "clusters": [shard, executor]},
    }
    return bootstrap, egress_socket


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
    host_envoy: subprocess.Popen[bytes] | None = None
    flow = Flow(mesh="envoy", workspace=os.path.join(folder, "ws")).add(uses=Noop, name="e0")
    rows: list[dict[str, Any]] = []
    try:
        flow.start()
        described = flow.describe()
        gateway_sidecar = described["gateway"]["sidecar"]
        replica = described["deployments"][0]["replicas"][0]
        bootstrap, egress = merged_bootstrap(
            gateway_sidecar["config"], replica["sidecar"]["config"], folder
        )
        config = os.path.join(folder, "host.envoy.yaml")
        with open(config, "w", encoding="utf-8") as fh:
            yaml.safe_dump(bootstrap, fh)
        host_envoy = subprocess.Popen(
            [
                envoy_binary(),
                "-c",
                config,
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "error",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(folder, "host.envoy.log"), "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(egress):
            if host_envoy.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the merged Envoy did not start; see {folder}")
            time.sleep(0.05)
        executor = replica["executor"]["pid"]
        split = {
            "gateway sidecar": gateway_sidecar["pid"],
            "replica sidecar": replica["sidecar"]["pid"],
            "executor": executor,
        }
        merged = {"one Envoy": host_envoy.pid, "executor": executor}
        authority = replica["cluster"]
        gateway_egress = gateway_sidecar["listener"]
        for rnd in range(1, args.rounds + 1):
            for setup, target, watched in (
                ("split", gateway_egress, split),
                ("one Envoy", f"unix:{egress}", merged),
            ):
                row = {"setup": setup, "round": rnd, **measure(target, authority, watched, args)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        if host_envoy is not None:
            host_envoy.terminate()
            host_envoy.wait(10)
        flow.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n1-doc executor calls, c={args.concurrency}, median of {args.rounds} rounds:")
    for setup in ("split", "one Envoy"):
        mine = [r for r in rows if r["setup"] == setup]
        names = list(mine[0]["cpu_us_per_call"])
        cells = ", ".join(
            f"{n} {statistics.median(r['cpu_us_per_call'][n] for r in mine):.0f} us" for n in names
        )
        envoys = statistics.median(
            sum(v for n, v in r["cpu_us_per_call"].items() if n != "executor") for r in mine
        )
        rate = statistics.median(r["calls_s"] for r in mine)
        print(f"  {setup:10} {rate:7.0f} calls/s; Envoy CPU per call {envoys:.0f} us ({cells})")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
