"""Physical ceiling for "gateway + 2 executors": bytes-only grpc.aio echo servers.

Three plain grpc.aio server processes (generic handlers, identity serializers,
no protobuf anywhere):

* exec1, exec2: echo the request bytes back;
* gateway: receives bytes, calls exec1, then calls exec2 with exec1's answer,
  and returns exec2's answer (client -> gateway -> exec1, gateway -> exec2).

The load comes from a separate client process (``_load.py``) with the same
loads as ``jina_flow.py``: a meshflow-like 1-doc request (150 B) and a 64-doc
512-d float32 request (138,500 B), at concurrency 1 and 32.

Runs with any Python that has grpcio, e.g.::

    /work/main/.venv/bin/python benchmarks/raw_echo.py
    /tmp/grpc157/bin/python benchmarks/raw_echo.py      # another grpcio

Servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _load  # noqa: E402

METHOD = "/bench.Echo/Call"
CASES = [  # (name, docs per request, payload bytes)
    ("1-doc", 1, 150),
    ("64-doc-512d", 64, 138_500),
]
CONCURRENCIES = [1, 32]
GRPC_OPTS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


# --------------------------------------------------------------------------- servers


async def _serve(role: str, upstreams: list[str]) -> None:
    import grpc

    channels = []
    if role == "exec":

        async def handle(request: bytes, context: object) -> bytes:
            return request
    else:
        channels = [grpc.aio.insecure_channel(u, options=GRPC_OPTS) for u in upstreams]
        calls = [ch.unary_unary(METHOD) for ch in channels]

        async def handle(request: bytes, context: object) -> bytes:
            data = request
            for call in calls:  # chained: exec1's answer goes to exec2
                data = await call(data)
            return data

    server = grpc.aio.server(options=GRPC_OPTS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(handle)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), timeout=30)
    print(f"READY {port}", flush=True)
    # stop when the parent closes our stdin
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.stop(0.5)
    for ch in channels:
        await ch.close()


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"server {proc.args} failed to start: {line!r}")
    return int(line.split()[1])


# --------------------------------------------------------------------------- driver


def main() -> None:
    p = argparse.ArgumentParser(description="gateway + 2 executors bytes-echo ceiling")
    p.add_argument("--role", choices=["exec", "gateway"], help=argparse.SUPPRESS)
    p.add_argument("--upstream", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=CONCURRENCIES)
    p.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each case wait up to S s for other processes to go idle "
        "(for shared machines; makes the run longer)",
    )
    p.add_argument("--json-out", help="also write all result lines to this file")
    args = p.parse_args()
    if args.role:
        asyncio.run(_serve(args.role, args.upstream))
        return

    import grpc

    vers = _load.versions("grpcio", "protobuf")
    procs: list[subprocess.Popen[str]] = []
    results = []
    tmpdir = tempfile.mkdtemp(prefix="meshflow-bench-raw-")
    try:
        t0 = time.perf_counter()
        procs += [_start(["--role", "exec"]), _start(["--role", "exec"])]  # in parallel
        p1, p2 = (_wait_ready(pr) for pr in procs)
        procs.append(
            _start(
                [
                    "--role",
                    "gateway",
                    "--upstream",
                    f"127.0.0.1:{p1}",
                    "--upstream",
                    f"127.0.0.1:{p2}",
                ]
            )
        )
        pg = _wait_ready(procs[2])
        with grpc.insecure_channel(f"127.0.0.1:{pg}") as ch:  # first call through the chain
            assert ch.unary_unary(METHOD)(b"ping", timeout=30) == b"ping"
        startup_s = time.perf_counter() - t0
        target = f"127.0.0.1:{pg}"
        listeners = [f"127.0.0.1:{port}" for port in (pg, p1, p2)]

        paths = {}
        for name, _n_docs, size in CASES:
            payload = os.urandom(size)
            paths[name] = os.path.join(tmpdir, f"{name}.bin")
            with open(paths[name], "wb") as fh:
                fh.write(payload)
            with grpc.insecure_channel(target, options=GRPC_OPTS) as ch:
                assert ch.unary_unary(METHOD)(payload, timeout=30) == payload
        server_pids = [pr.pid for pr in procs]
        for rnd in range(args.repeat):  # rounds outside, so interference spreads out
            for name, n_docs, _size in CASES:
                for conc in args.concurrency:
                    row = _load.measure_case(
                        bench="raw_echo",
                        case=name,
                        docs_per_req=n_docs,
                        target=target,
                        method=METHOD,
                        payload_path=paths[name],
                        concurrency=conc,
                        duration=args.duration,
                        warmup=args.warmup,
                        server_pids=server_pids,
                        quiet_wait=args.quiet_wait,
                        extra={"round": rnd + 1, "grpcio": vers["grpcio"]},
                    )
                    results.append(row)
                    print(json.dumps(row), flush=True)
        mem = _load.memory_report(pr.pid for pr in procs)
    finally:
        for pr in procs:
            try:
                if pr.stdin:
                    pr.stdin.close()
            except OSError:
                pass
        for pr in procs:
            try:
                pr.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait()
        for fn in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, fn))
        os.rmdir(tmpdir)

    agg = _load.aggregate(results)
    summary = {
        "bench": "raw_echo",
        "summary": True,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "versions": vers,
        "startup_s": round(startup_s, 3),
        "processes": len(procs),
        "peak_rss_sum_mb": mem["peak_rss_sum_mb"],
        "pss_sum_mb": mem["pss_sum_mb"],
        "per_process": mem["processes"],
        "listeners": listeners,
        "loadavg": os.getloadavg(),
    }
    _load.emit(results, agg, summary, args.json_out)
    _load.finish(
        results,
        agg,
        [
            f"raw grpc.aio echo, grpcio {vers['grpcio']}, Python {vers['python']}, "
            f"{os.cpu_count()} CPUs",
            f"gateway + 2 echo executors: start-up {startup_s:.2f} s (spawn of fresh "
            f"interpreters: 2 executors in parallel, then the gateway),"
            f" peak RSS sum {mem['peak_rss_sum_mb']} MB (PSS {mem['pss_sum_mb']} MB)",
            f"median of {args.repeat} rounds of {args.duration:g} s (after {args.warmup:g} s "
            f"warm-up); srv CPU = CPU of all server processes per request",
        ],
    )


if __name__ == "__main__":
    main()
