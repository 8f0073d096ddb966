"""HTTP flavour of ``_load.py``: a closed-loop JSON-over-HTTP client in its own process.

Used as a separate client process, so that the load generator does not share a GIL with
the server under test::

    python _http_load.py --url http://127.0.0.1:PORT/graphql --body body.json \
        --concurrency 32 --duration 5 --warmup 1

POSTs the bytes of ``body.json`` (``content-type: application/json``) over HTTP/1.1
keep-alive, one connection per concurrent worker, and prints one JSON line of stats (the same
keys as ``_load.py``'s gRPC client). A request fails (is counted in ``errors``) unless the
status is 200 and the body holds none of the ``--reject`` strings (``measure_http_case``
passes ``"errors":``, GraphQL's error list, unless told otherwise).

Two clients, ``--client``: ``httpx`` (its ``AsyncClient``, one per worker), and ``raw``
(asyncio streams: the request's bytes written as they are, the answer's status line, headers
and body read by ``Content-Length`` or chunks). They load a server the same way; the raw one
spends about a fifth of httpx's CPU per request, which on a 2-core machine leaves that much
more CPU to the server under test.

As a library: :func:`measure_http_case` runs one case from such a process and returns a flat
result row like ``_load.measure_case``, plus the server CPU per request of each server process
(``cpu_ms_per_req_by_process``). Needs only the standard library in the orchestrator, and
httpx in the interpreter that runs the httpx client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _load  # noqa: E402  (stdlib + grpc only)

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
DEFAULT_REJECT = ['"errors":']


async def _http_client(args: argparse.Namespace) -> _load.LoadStats:
    import httpx

    with open(args.body, "rb") as fh:
        body = fh.read()
    headers = {"content-type": "application/json", "accept": "application/json"}
    for item in args.header:
        name, _, value = item.partition(":")
        headers[name.strip().lower()] = value.strip()
    reject = [r.encode() for r in args.reject]
    clients = [
        httpx.AsyncClient(
            http1=True,
            http2=False,
            timeout=args.timeout,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(args.concurrency)
    ]
    idle = list(clients)  # closed loop: a worker always finds an idle client

    async def one() -> bytes:
        client = idle.pop()
        try:
            response = await client.post(args.url, content=body, headers=headers)
        finally:
            idle.append(client)
        return _checked(response.status_code, response.content, reject)

    async def close() -> None:
        for client in clients:
            await client.aclose()

    return await _drive(one, close, args, body)


def _checked(status: int, content: bytes, reject: list[bytes]) -> bytes:
    """The answer's body, or an error when it is not a 200 or holds a ``--reject`` string."""
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {content[:300]!r}")
    for bad in reject:
        if bad in content:
            raise RuntimeError(f"answer holds {bad!r}: {content[:300]!r}")
    return content


async def _drive(
    one: Callable[[], Awaitable[bytes]],
    close: Callable[[], Awaitable[None]],
    args: argparse.Namespace,
    body: bytes,
) -> _load.LoadStats:
    """Check one answer, then load with ``one`` as told; ``close`` the connections after."""
    try:
        first = await one()  # the answer is right (status, no error) before we load it
        cpu0 = time.process_time()
        stats = await _load.run_load(
            one,
            concurrency=args.concurrency,
            duration=args.duration,
            warmup=args.warmup,
            max_requests=args.max_requests,
        )
        load_cpu = time.process_time() - cpu0
    finally:
        await close()
    stats.extra.update(
        request_bytes=len(body), response_bytes=len(first), load_cpu_s=round(load_cpu, 3)
    )
    return stats


MAX_HEAD = 64 * 1024


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 answer: status, headers (lower-case names), body (by length or chunks)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise ValueError("answer head too large")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                trailer = await reader.readuntil(b"\r\n")
                while trailer != b"\r\n":  # trailers, if any, up to the empty line
                    trailer = await reader.readuntil(b"\r\n")
                return status, headers, b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return status, headers, await reader.readexactly(int(headers.get(b"content-length", b"0")))


async def _raw_client(args: argparse.Namespace) -> _load.LoadStats:
    url = urllib.parse.urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    with open(args.body, "rb") as fh:
        body = fh.read()
    head = [
        f"POST {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1",
        f"host: {url.netloc}",
        "content-type: application/json",
        "accept: application/json",
        f"content-length: {len(body)}",
        *(f"{n.strip()}: {v.strip()}" for n, _, v in (h.partition(":") for h in args.header)),
    ]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    reject = [r.encode() for r in args.reject]
    Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
    idle: list[Connection | None] = [None] * args.concurrency  # opened on first use

    async def exchange(connection: Connection) -> tuple[int, dict[bytes, bytes], bytes]:
        reader, writer = connection
        writer.write(request)
        return await _read_answer(reader)

    async def one() -> bytes:
        connection = idle.pop()
        try:
            if connection is None:
                connection = await asyncio.open_connection(host, port, limit=MAX_HEAD)
            status, headers, content = await asyncio.wait_for(exchange(connection), args.timeout)
        except BaseException:
            if connection is not None:
                connection[1].close()
            idle.append(None)  # a fresh connection next time
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            connection[1].close()
            connection = None
        idle.append(connection)
        return _checked(status, content, reject)

    async def close() -> None:
        for connection in idle:
            if connection is not None:
                connection[1].close()

    return await _drive(one, close, args, body)


CLIENTS = {"httpx": _http_client, "raw": _raw_client}


def client_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path (loopback only)")
    p.add_argument("--body", required=True, help="file with the JSON body of every request")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--max-requests", type=int, default=_load.DEFAULT_MAX_REQUESTS)
    p.add_argument("--client", choices=sorted(CLIENTS), default="httpx")
    p.add_argument(
        "--header", action="append", default=[], help="'Name: value' sent with every request"
    )
    p.add_argument(
        "--reject",
        action="append",
        default=[],
        help="fail a request whose body holds this string (repeatable; GraphQL: '\"errors\":')",
    )
    args = p.parse_args(argv)
    if not any(args.url.startswith(f"http://{h}:") for h in LOOPBACK):
        p.error("benchmarks only target loopback addresses over plain http")
    stats = asyncio.run(CLIENTS[args.client](args))
    d = stats.to_dict()
    d["client_cpu_s"] = round(time.process_time(), 3)
    print(json.dumps(d), flush=True)


def run_http_client_subprocess(
    *,
    url: str,
    body_path: str,
    concurrency: int,
    duration: float,
    warmup: float,
    python: str | None = None,
    reject: list[str] | None = None,
    headers: Mapping[str, str] | None = None,
    client: str = "httpx",
) -> dict[str, Any]:
    """Run :func:`client_main` in a fresh process and return its JSON stats."""
    cmd = [
        python or sys.executable,
        os.path.abspath(__file__),
        "--url",
        url,
        "--body",
        body_path,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    for r in reject if reject is not None else DEFAULT_REJECT:
        cmd += ["--reject", r]
    for name, value in (headers or {}).items():
        cmd += ["--header", f"{name}: {value}"]
    cmd += ["--client", client]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 120)
    if res.returncode != 0:
        raise RuntimeError(f"HTTP client failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def measure_http_case(
    *,
    bench: str,
    case: str,
    docs_per_req: int,
    url: str,
    body_path: str,
    concurrency: int,
    duration: float,
    warmup: float,
    server_pids: Mapping[str, int],
    python: str | None = None,
    reject: list[str] | None = None,
    quiet_wait: float = 0.0,
    extra: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    client: str = "httpx",
) -> dict[str, Any]:
    """One HTTP load case from a separate client process, as one flat result row.

    ``server_pids`` maps a process name to its pid; besides the summed server CPU per request
    the row holds each process's (``cpu_ms_per_req_by_process``), warm-up requests included.
    """
    pids = dict(server_pids)
    waited = _load.wait_quiet(quiet_wait, pids.values()) if quiet_wait > 0 else 0.0
    before = {name: _load._proc_cpu_ticks(pid) for name, pid in pids.items()}
    watch = _load.CpuWatch(pids.values())
    stats = run_http_client_subprocess(
        url=url,
        body_path=body_path,
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
        python=python,
        reject=reject,
        headers=headers,
        client=client,
    )
    cpu = watch.stop()
    sent = max(stats["requests"] + stats["warmup_requests"] + 1, 1)  # +1: the check request
    by_process = {
        name: round(1000.0 * (_load._proc_cpu_ticks(pid) - before[name]) / _load._TICK / sent, 3)
        for name, pid in pids.items()
    }
    row: dict[str, Any] = {
        **_load.stats_row(bench=bench, case=case, docs_per_req=docs_per_req, stats=stats),
        # the client's CPU while loading (warm-up included; start-up and imports excluded)
        "client_cpu_ms_per_req": round(1000.0 * stats["load_cpu_s"] / max(sent - 1, 1), 3),
        "server_cpu_ms_per_req": round(1000.0 * cpu["servers_cpu_s"] / sent, 3),
        "cpu_ms_per_req_by_process": by_process,
        "foreign_pct": cpu["foreign_pct"],
        "steal_pct": cpu["steal_pct"],
        "cpu": cpu,
        "quiet_waited_s": waited,
    }
    if extra:
        row.update(extra)
    return row


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``_load.aggregate`` plus medians of the client's and each process's CPU per request."""
    import statistics

    out = _load.aggregate(rows)
    for m in out:
        same = [r for r in rows if (r["case"], r["concurrency"]) == (m["case"], m["concurrency"])]
        m["client_cpu_ms_per_req"] = round(
            statistics.median(r["client_cpu_ms_per_req"] for r in same), 3
        )
        names = same[0]["cpu_ms_per_req_by_process"]
        m["cpu_ms_per_req_by_process"] = {
            n: round(statistics.median(r["cpu_ms_per_req_by_process"][n] for r in same), 3)
            for n in names
        }
    return out


def listening_ports(pids: list[int]) -> dict[int, list[int]]:
    """Loopback TCP ports each of ``pids`` listens on (socket inodes of /proc/net/tcp*)."""
    by_inode: dict[str, int] = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A":  # LISTEN
                by_inode[parts[9]] = int(parts[1].rsplit(":", 1)[1], 16)
    out: dict[int, list[int]] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in by_inode:
                out.setdefault(pid, []).append(by_inode[link[8:-1]])
    return {pid: sorted(set(ports)) for pid, ports in out.items()}


def group_cpu(by_process: Mapping[str, float]) -> dict[str, float]:
    """Per-request CPU summed by role: gateway, executors, sidecars (from process names; the
    Flow's one Envoy of ``envoy_proxy='host'`` counts as the sidecars)."""
    out = {"gateway": 0.0, "executors": 0.0, "sidecars": 0.0}
    for name, ms in by_process.items():
        role = (
            "sidecars"
            if name.startswith("sidecar") or name == "the Flow's Envoy"
            else "gateway"
            if name.startswith("gateway")
            else "executors"
        )
        out[role] += ms
    return {k: round(v, 3) for k, v in out.items()}


TABLE_COLUMNS = [
    ("case", "case"),
    ("concurrency", "conc"),
    ("request_bytes", "req B"),
    ("response_bytes", "resp B"),
    ("rps", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("server_cpu_ms_per_req", "srv CPU ms/req"),
    ("client_cpu_ms_per_req", "client CPU ms/req"),
    ("errors", "errors"),
    ("rps_runs", "req/s per run"),
    ("max_foreign_pct", "foreign CPU %"),
]


if __name__ == "__main__":
    client_main()
