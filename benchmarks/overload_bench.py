"""Overload: goodput, refusals and latency when more clients come than the gateway can hold.

For each mesh (``--mesh``, Envoy by default), one Flow as the issue measured it:
``Flow(mesh=M).add(uses=Noop).add(uses=Noop)`` loaded through its GraphQL door with the
``post`` mutation for 1 document. The load is a lean HTTP/1.1 client in a separate process
(raw asyncio streams: one keep-alive connection per client, opened over the first second),
each client sending its next request when the last is answered. A refused request (503 or
429) is retried after the ``Retry-After`` it carries times a random 1 to 1.5, as a client
that honours the header does (``--ignore-retry-after`` retries at once instead).

Cases:

* **capacity**: 32, ``--hold`` (1,000) and 3 x ``--hold`` (3,000) connections. Reports the
  answered requests per second (goodput), the refusals (by status, and how many lacked a
  retry hint), other failures, and p50/p99 of the answered requests (time from sending the
  answered attempt to its answer).
* **fairness** (a Flow with auth on): one token's client sends alone (its idle p50/p99),
  then the same while another token floods with ``--hold`` connections.

Prints one JSON line per case and a summary with the issue's checks::

    .venv/bin/python benchmarks/overload_bench.py [--mesh envoy direct] [--duration 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

POST = 'mutation($docs: [DocumentInput!]) { post(on: "/", docs: $docs) { docs { id text } } }'
BODY = json.dumps({"query": POST, "variables": {"docs": [{"text": "hello world"}]}}).encode()
SECRET_ENV = "OVERLOAD_BENCH_SECRET"


# -- the client (a separate process) ---------------------------------------------------------


def _request(port: int, token: str | None) -> bytes:
    head = [
        "POST /graphql HTTP/1.1",
        f"host: 127.0.0.1:{port}",
        "content-type: application/json",
        "accept: application/json",
        f"content-length: {len(BODY)}",
    ]
    if token:
        head.append(f"authorization: Bearer {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + BODY


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers, body


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    request = _request(args.port, args.token)
    start = time.monotonic()
    measure_from = start + args.warmup
    stop_at = measure_from + args.duration
    latencies: list[float] = []
    counts: dict[str, int] = {}

    def count(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    async def worker(index: int) -> None:
        await asyncio.sleep(args.ramp * index / max(args.connections, 1))
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while time.monotonic() < stop_at:
            reused = connection is not None
            try:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", args.port)
                reader, writer = connection
                sent = time.monotonic()
                writer.write(request)
                status, headers, body = await _answer(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if connection is not None:
                    connection[1].close()
                connection = None
                if reused:  # the server closed it while idle (keep-alive timeout): reconnect
                    count("reconnects")
                    continue
                count("connection errors")
                await asyncio.sleep(0.1)
                continue
            done = time.monotonic()
            measured = sent >= measure_from and done <= stop_at
            if status == 200 and b'"errors"' not in body:
                if measured:
                    latencies.append(done - sent)
                    count("answered")
            elif status in (429, 503):
                hint = headers.get(b"retry-after")
                if measured:
                    count(f"refused {status}")
                    if hint is None:
                        count("refused without retry-after")
                if args.interval <= 0 and not args.ignore_retry_after:
                    wait = float(hint) if hint else 1.0
                    await asyncio.sleep(wait * random.uniform(1.0, 1.5))
            elif measured:
                count(f"failed {status}")
            if headers.get(b"connection") == b"close":
                writer.close()
                connection = None
            if args.interval > 0:
                await asyncio.sleep(max(0.0, args.interval - (time.monotonic() - sent)))
        if connection is not None:
            connection[1].close()

    cpu0 = time.process_time()
    await asyncio.gather(*(worker(i) for i in range(args.connections)))
    latencies.sort()

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

    return {
        "connections": args.connections,
        "duration_s": args.duration,
        "answered_per_s": round(counts.get("answered", 0) / args.duration, 1),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "counts": counts,
        "client_cpu_s": round(time.process_time() - cpu0, 2),
    }


def client_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--ramp", type=float, default=1.0)
    p.add_argument("--token")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between sends (steady)")
    p.add_argument("--ignore-retry-after", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(_client(args))), flush=True)


# -- the orchestrator ------------------------------------------------------------------------


def _start_client(port: int, connections: int, args: argparse.Namespace, **extra: Any) -> Any:
    cmd = [sys.executable, os.path.abspath(__file__), "--client", "--port", str(port)]
    cmd += ["--connections", str(connections), "--duration", str(args.duration)]
    cmd += ["--warmup", str(args.warmup)]
    if args.ignore_retry_after:
        cmd.append("--ignore-retry-after")
    for name, value in extra.items():
        cmd += [f"--{name}", str(value)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: Any, timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load client failed: {err[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def capacity(args: argparse.Namespace, mesh: str, folder: str) -> list[dict[str, Any]]:
    from http_bench import Noop

    from meshflow import Flow

    flow = Flow(
        name="overload",
        workspace=folder,
        mesh=mesh,
        admission=args.admission,
        max_in_flight=args.max_in_flight,
    )
    flow.add(uses=Noop).add(uses=Noop)
    rows = []
    with flow:
        assert flow.graphql_port is not None
        for connections in (32, args.hold, 3 * args.hold):
            time.sleep(2)  # the previous clients' connections close
            proc = _start_client(flow.graphql_port, connections, args)
            row = {"mesh": mesh, "case": "capacity", **_result(proc, args.duration + 120)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def fairness(args: argparse.Namespace, mesh: str, folder: str) -> list[dict[str, Any]]:
    from http_bench import Noop

    from meshflow import Flow, JWTAuth, mint_token

    secret = os.urandom(32).hex()
    os.environ[SECRET_ENV] = secret
    auth = JWTAuth(issuer="bench", audience="overload", secret_env=SECRET_ENV)
    flow = Flow(
        name="fairness",
        workspace=folder,
        mesh=mesh,
        auth=auth,
        admission=args.admission,
        max_in_flight=args.max_in_flight,
    )
    flow.add(uses=Noop).add(uses=Noop)

    def token(subject: str) -> str:
        return mint_token(key=secret.encode(), subject=subject, issuer="bench", audience="overload")

    rows = []
    with flow:
        assert flow.graphql_port is not None
        port = flow.graphql_port
        steady = {"token": token("steady"), "interval": 0.02}
        idle = _result(_start_client(port, 1, args, **steady), args.duration + 120)
        rows.append({"mesh": mesh, "case": "fairness: steady alone", **idle})
        print(json.dumps(rows[-1]), flush=True)
        time.sleep(2)
        flood = _start_client(port, args.hold, args, token=token("flood"))
        during = _start_client(port, 1, args, **steady)
        rows.append(
            {
                "mesh": mesh,
                "case": "fairness: steady during the flood",
                **_result(during, args.duration + 120),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        rows.append(
            {"mesh": mesh, "case": "fairness: the flood", **_result(flood, args.duration + 120)}
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows: list[dict[str, Any]], hold: int) -> None:
    for mesh in sorted({r["mesh"] for r in rows}):
        cap = {r["connections"]: r for r in rows if r["mesh"] == mesh and r["case"] == "capacity"}
        if cap:
            peak = max(r["answered_per_s"] for r in cap.values())
            over = cap[3 * hold]
            at = cap[hold]
            refused = sum(v for k, v in over["counts"].items() if k.startswith("refused "))
            failed = sum(v for k, v in over["counts"].items() if k.startswith("failed "))
            print(
                f"{mesh}: peak {peak:,.0f} answered/s; at {3 * hold:,} connections "
                f"{over['answered_per_s']:,.0f}/s = {over['answered_per_s'] / peak:.0%} of peak; "
                f"{refused:,} refusals ({over['counts'].get('refused without retry-after', 0)} "
                f"without Retry-After), {failed} other failures; p99 {over['p99_ms']} ms vs "
                f"{at['p99_ms']} ms at {hold:,} ({over['p99_ms'] / at['p99_ms']:.2f}x)"
            )
        fair = {r["case"]: r for r in rows if r["mesh"] == mesh and r["case"].startswith("fair")}
        if fair:
            idle = fair["fairness: steady alone"]
            during = fair["fairness: steady during the flood"]
            lost = sum(v for k, v in during["counts"].items() if k != "answered")
            print(
                f"{mesh}: steady client p99 {idle['p99_ms']} ms alone, {during['p99_ms']} ms "
                f"during a {hold:,}-connection flood ({during['p99_ms'] / idle['p99_ms']:.2f}x); "
                f"{during['counts'].get('answered', 0)} answered, {lost} not; the flood got "
                f"{fair['fairness: the flood']['answered_per_s']:,.0f} answered/s"
            )


def main() -> None:
    if "--client" in sys.argv:
        sys.argv.remove("--client")
        client_main(sys.argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mesh", nargs="+", default=["envoy"], choices=["envoy", "direct"])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--hold", type=int, default=1000, help="connections the gateway holds")
    p.add_argument("--skip-fairness", action="store_true")
    p.add_argument("--skip-capacity", action="store_true")
    p.add_argument("--ignore-retry-after", action="store_true")
    p.add_argument("--max-in-flight", type=int, default=1024, help="Flow(max_in_flight=...)")
    p.add_argument(
        "--admission", type=json.loads, default={}, help="AdmissionPolicy fields as JSON"
    )
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    rows: list[dict[str, Any]] = []
    for mesh in args.mesh:
        with tempfile.TemporaryDirectory(prefix="overload-bench-") as folder:
            if not args.skip_capacity:
                rows += capacity(args, mesh, folder)
            if not args.skip_fairness:
                rows += fairness(args, mesh, folder)
    summary(rows, args.hold)


if __name__ == "__main__":
    main()
