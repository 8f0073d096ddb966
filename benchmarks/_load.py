"""Reusable closed-loop load generator for the benchmarks (stdlib + grpcio only).

Used two ways:

* as a library: ``await run_load(make_request, concurrency=32, duration=5.0)``
  where ``make_request`` is a zero-argument callable returning a fresh awaitable
  per request (a coroutine factory);
* as a separate client process, so that the load generator's CPU does not share
  a GIL with the server under test::

      python _load.py --target 127.0.0.1:PORT --method /pkg.Service/Method \
          --payload request.bin --concurrency 32 --duration 5 --warmup 1

  sends the raw bytes of ``request.bin`` as a unary-unary gRPC call (identity
  serializers, so no protobuf is needed here) and prints one JSON line of stats.

It deliberately imports nothing from meshflow or jina, so any venv that has
grpcio can import it by path (``sys.path.insert(0, <benchmarks dir>)``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

RequestFactory = Callable[[], Awaitable[Any]]

# Hard cap on the number of requests one measurement may send (warm-up included),
# so that every load loop is bounded in count as well as in time.
DEFAULT_MAX_REQUESTS = 2_000_000


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] * (1.0 - frac) + sorted_values[hi] * frac


@dataclass
class LoadStats:
    concurrency: int
    duration_s: float  # measured wall time of the measurement window
    requests: int  # successful requests completed inside the window
    errors: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    warmup_requests: int = 0
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(extra)
        return d


async def run_load(
    make_request: RequestFactory,
    *,
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
    max_requests: int = DEFAULT_MAX_REQUESTS,
) -> LoadStats:
    """Closed-loop load: ``concurrency`` workers each await one request at a time.

    Requests are sent for ``warmup`` seconds (results discarded), then for
    ``duration`` seconds (measured). A request counts in the window if it
    *started* inside it; the window ends when the last of those finishes.
    The total number of requests is capped by ``max_requests``.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    sent = 0
    warm_count = 0
    now = time.perf_counter
    t0 = now()
    measure_start = t0 + warmup
    deadline = measure_start + duration

    async def worker() -> None:
        nonlocal errors, first_error, sent, warm_count
        while sent < max_requests:
            start = now()
            if start >= deadline:
                return
            sent += 1
            try:
                await make_request()
            except Exception as exc:  # counted, never raised: load must go on
                if start >= measure_start:
                    errors += 1
                    if first_error is None:
                        first_error = f"{type(exc).__name__}: {exc}"[:500]
                continue
            if start >= measure_start:
                latencies.append(now() - start)
            else:
                warm_count += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    end = now()
    window = max(end - max(measure_start, t0), 1e-9)
    lat = sorted(latencies)
    ms = 1000.0
    return LoadStats(
        concurrency=concurrency,
        duration_s=round(window, 3),
        requests=len(lat),
        errors=errors,
        rps=round(len(lat) / window, 1),
        p50_ms=round(percentile(lat, 50) * ms, 3),
        p90_ms=round(percentile(lat, 90) * ms, 3),
        p99_ms=round(percentile(lat, 99) * ms, 3),
        mean_ms=round((sum(lat) / len(lat)) * ms, 3) if lat else float("nan"),
        max_ms=round(lat[-1] * ms, 3) if lat else float("nan"),
        warmup_requests=warm_count,
        first_error=first_error,
    )


# --------------------------------------------------------------------------- memory


def _read_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def vm_kb(pid: int, key: str = "VmHWM") -> int:
    """VmHWM (peak RSS) or VmRSS of one process in kB, 0 if it is gone."""
    v = _read_status(pid).get(key, "0 kB").split()
    return int(v[0]) if v else 0


def descendants(root: int) -> list[int]:
    """All live descendant pids of ``root`` (walks /proc, no psutil needed)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        ppid = _read_status(int(name)).get("PPid")
        if ppid and ppid.isdigit():
            children.setdefault(int(ppid), []).append(int(name))
    out: list[int] = []
    stack = [root]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def pss_kb(pid: int) -> int:
    """Current proportional set size (shared pages split between sharers), kB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tcp_listeners() -> list[str]:
    """Listening TCP sockets of this network namespace (from /proc/net/tcp*)."""
    import socket

    out = []
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(path) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] != "0A":  # LISTEN
                continue
            addr, port = parts[1].split(":")
            if v6:  # four little-endian 32-bit words
                raw = b"".join(bytes.fromhex(addr[i : i + 8])[::-1] for i in range(0, 32, 8))
                ip = "[" + socket.inet_ntop(socket.AF_INET6, raw) + "]"
            else:
                ip = socket.inet_ntoa(bytes.fromhex(addr)[::-1])
            out.append(f"{ip}:{int(port, 16)}")
    return sorted(out)


def memory_report(pids: Iterable[int]) -> dict[str, Any]:
    """Per-process and summed peak RSS (VmHWM), current RSS and PSS, in MB."""
    per = []
    for pid in pids:
        st = _read_status(pid)
        if not st:
            continue
        hwm = int(st.get("VmHWM", "0 kB").split()[0])
        rss = int(st.get("VmRSS", "0 kB").split()[0])
        per.append(
            {
                "pid": pid,
                "name": st.get("Name", "?"),
                "hwm_mb": round(hwm / 1024, 1),
                "rss_mb": round(rss / 1024, 1),
                "pss_mb": round(pss_kb(pid) / 1024, 1),
            }
        )
    return {
        "peak_rss_sum_mb": round(sum(p["hwm_mb"] for p in per), 1),
        "rss_sum_mb": round(sum(p["rss_mb"] for p in per), 1),
        "pss_sum_mb": round(sum(p["pss_mb"] for p in per), 1),
        "processes": per,
    }


# --------------------------------------------------------------------------- CPU accounting
#
# The machine may be shared (tests of other people running at the same time).
# For every measured case we compare the CPU the whole machine spent with the CPU
# spent by our own processes (servers, the client and this orchestrator); the
# difference ("foreign" CPU) tells whether the figures are contaminated.

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def _system_ticks() -> tuple[int, int]:
    """(busy, steal) ticks of all CPUs since boot."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return user + nice + system + irq + softirq, steal


class CpuWatch:
    """CPU used by the machine vs. by ``pids`` + this process + its reaped children."""

    def __init__(self, pids: Iterable[int]) -> None:
        import resource

        self._res = resource
        self.pids = list(pids)
        self._t = time.perf_counter()
        self._sys = _system_ticks()
        self._own = sum(_proc_cpu_ticks(p) for p in self.pids)
        self._self = os.times()
        self._kids = resource.getrusage(resource.RUSAGE_CHILDREN)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t
        busy, steal = _system_ticks()
        servers = (sum(_proc_cpu_ticks(p) for p in self.pids) - self._own) / _TICK
        own = servers
        me = os.times()
        own += (me.user - self._self.user) + (me.system - self._self.system)
        kids = self._res.getrusage(self._res.RUSAGE_CHILDREN)
        client = (kids.ru_utime - self._kids.ru_utime) + (kids.ru_stime - self._kids.ru_stime)
        own += client
        total = (busy - self._sys[0]) / _TICK
        ncpu = os.cpu_count() or 1
        foreign = max(total - own, 0.0)
        return {
            "wall_s": round(wall, 2),
            "machine_cpu_s": round(total, 2),
            "own_cpu_s": round(own, 2),
            "servers_cpu_s": round(servers, 2),
            "reaped_children_cpu_s": round(client, 2),
            "foreign_cpu_s": round(foreign, 2),
            "foreign_pct": round(100.0 * foreign / (wall * ncpu), 1),
            "steal_pct": round(100.0 * (steal - self._sys[1]) / _TICK / (wall * ncpu), 1),
        }


def wait_quiet(
    max_wait: float, pids: Iterable[int] = (), threshold_pct: float = 5.0, sample_s: float = 0.5
) -> float:
    """Wait (at most ``max_wait`` s) until other processes use < threshold of the CPUs.

    Returns the seconds waited. ``pids`` are our own (idle) servers, not counted.
    """
    pids = list(pids)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        watch = CpuWatch(pids)
        time.sleep(sample_s)
        if watch.stop()["foreign_pct"] < threshold_pct:
            break
    return round(time.perf_counter() - t0, 1)


def stats_row(*, bench: str, case: str, docs_per_req: int, stats: dict[str, Any]) -> dict[str, Any]:
    """The figures of one client run, as the first fields of a result row."""
    return {
        "bench": bench,
        "case": case,
        "docs_per_req": docs_per_req,
        "concurrency": stats["concurrency"],
        "rps": stats["rps"],
        "docs_s": round(stats["rps"] * docs_per_req, 1),
        "p50_ms": stats["p50_ms"],
        "p90_ms": stats["p90_ms"],
        "p99_ms": stats["p99_ms"],
        "requests": stats["requests"],
        "errors": stats["errors"],
        "first_error": stats["first_error"],
        "request_bytes": stats["request_bytes"],
        "response_bytes": stats["response_bytes"],
        "duration_s": stats["duration_s"],
        "client_cpu_s": stats["client_cpu_s"],
    }


def measure_case(
    *,
    bench: str,
    case: str,
    docs_per_req: int,
    target: str,
    method: str,
    payload_path: str,
    concurrency: int,
    duration: float,
    warmup: float,
    server_pids: Iterable[int],
    python: str | None = None,
    quiet_wait: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One load case from a separate client process, as one flat result row.

    With ``quiet_wait`` > 0, first waits up to that long for the machine to be quiet.
    """
    server_pids = list(server_pids)
    waited = wait_quiet(quiet_wait, server_pids) if quiet_wait > 0 else 0.0
    watch = CpuWatch(server_pids)
    stats = run_client_subprocess(
        target=target,
        method=method,
        payload_path=payload_path,
        concurrency=concurrency,
        duration=duration,
        warmup=warmup,
        python=python,
    )
    cpu = watch.stop()
    row: dict[str, Any] = {
        **stats_row(bench=bench, case=case, docs_per_req=docs_per_req, stats=stats),
        # server-side CPU (all server processes) per request, warm-up included
        "server_cpu_ms_per_req": round(
            1000.0 * cpu["servers_cpu_s"] / max(stats["requests"] + stats["warmup_requests"], 1), 3
        ),
        "foreign_pct": cpu["foreign_pct"],
        "steal_pct": cpu["steal_pct"],
        "cpu": cpu,
        "quiet_waited_s": waited,
    }
    if extra:
        row.update(extra)
    return row


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median (per metric) over repeated runs of the same (case, concurrency)."""
    import statistics

    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["concurrency"]), []).append(r)
    out = []
    for rs in groups.values():
        m = dict(rs[0])
        for k in (
            "rps",
            "docs_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "server_cpu_ms_per_req",
            "foreign_pct",
            "steal_pct",
        ):
            digits = 3 if k.endswith("_ms") or k.endswith("_req") else 1
            m[k] = round(statistics.median(r[k] for r in rs), digits)
        m["errors"] = sum(r["errors"] for r in rs)
        m["requests"] = sum(r["requests"] for r in rs)
        m["runs"] = len(rs)
        m["rps_runs"] = [r["rps"] for r in rs]
        m["max_foreign_pct"] = max(r["foreign_pct"] for r in rs)
        m.pop("cpu", None)
        m.pop("first_error", None)
        m["first_error"] = next((r["first_error"] for r in rs if r["first_error"]), None)
        m["aggregate"] = "median"
        out.append(m)
    return out


FOREIGN_WARN_PCT = 10.0

TABLE_COLUMNS = [
    ("case", "case"),
    ("concurrency", "conc"),
    ("request_bytes", "req B"),
    ("rps", "req/s"),
    ("docs_s", "docs/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("server_cpu_ms_per_req", "srv CPU ms/req"),
    ("errors", "errors"),
    ("rps_runs", "req/s per run"),
    ("max_foreign_pct", "foreign CPU %"),
]


def emit(
    results: list[dict[str, Any]],
    agg: list[dict[str, Any]],
    summary: dict[str, Any],
    json_out: str | None,
) -> None:
    """Print the medians and the summary as JSON lines; write every line to ``json_out``."""
    for line in [*agg, summary]:
        print(json.dumps(line), flush=True)
    if json_out:
        with open(json_out, "w") as fh:
            for line in [*results, *agg, summary]:
                fh.write(json.dumps(line) + "\n")


def finish(results: list[dict[str, Any]], agg: list[dict[str, Any]], headline: list[str]) -> None:
    """The human part of a report: headline lines, the table, the noise warning."""
    print()
    for line in headline:
        print(line)
    print_table(agg, TABLE_COLUMNS)
    warn = contamination_warning(results)
    if warn:
        print(warn)


def contamination_warning(rows: list[dict[str, Any]]) -> str | None:
    bad = [r for r in rows if r.get("foreign_pct", 0) > FOREIGN_WARN_PCT]
    if not bad:
        return None
    worst = max(r["foreign_pct"] for r in bad)
    return (
        f"WARNING: {len(bad)} of {len(rows)} runs saw other processes use more than "
        f"{FOREIGN_WARN_PCT:.0f}% of the machine's CPU (worst {worst}%); the machine "
        f"was not quiet, figures are low and noisy"
    )


# --------------------------------------------------------------------------- reporting


def versions(*dists: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for d in dists:
        try:
            out[d] = version(d)
        except PackageNotFoundError:
            out[d] = "-"
    return out


def print_table(
    rows: list[dict[str, Any]], columns: list[tuple[str, str]], file: Any = sys.stdout
) -> None:
    """Plain aligned text table; ``columns`` is [(key, header), ...]."""
    cells = [[h for _, h in columns]]
    for r in rows:
        cells.append([_fmt(r.get(k)) for k, _ in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    for n, line in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)), file=file)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=file)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v >= 100:
            return f"{v:,.0f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return "/".join(_fmt(x) for x in v)
    return str(v)


# --------------------------------------------------------------------------- client process


async def _bytes_client(args: argparse.Namespace) -> LoadStats:
    import grpc

    with open(args.payload, "rb") as fh:
        payload = fh.read()
    opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(args.target, options=opts) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=30)
        call = channel.unary_unary(args.method)  # no serializers: bytes in, bytes out
        resp_size = len(await call(payload, timeout=30))

        def make() -> Awaitable[Any]:
            return call(payload, timeout=args.timeout)

        stats = await run_load(
            make,
            concurrency=args.concurrency,
            duration=args.duration,
            warmup=args.warmup,
            max_requests=args.max_requests,
        )
    stats.extra.update(request_bytes=len(payload), response_bytes=resp_size)
    return stats


def client_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="host:port (loopback only)")
    p.add_argument("--method", required=True, help="full method path /pkg.Service/Method")
    p.add_argument("--payload", required=True, help="file with the serialized request")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--max-requests", type=int, default=DEFAULT_MAX_REQUESTS)
    args = p.parse_args(argv)
    host = args.target.rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        p.error("benchmarks only target loopback addresses")
    stats = asyncio.run(_bytes_client(args))
    d = stats.to_dict()
    d["client_cpu_s"] = round(time.process_time(), 3)
    print(json.dumps(d), flush=True)


def run_client_subprocess(
    *,
    target: str,
    method: str,
    payload_path: str,
    concurrency: int,
    duration: float,
    warmup: float,
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run :func:`client_main` in a fresh process and return its JSON stats."""
    import subprocess

    cmd = [
        python or sys.executable,
        os.path.abspath(__file__),
        "--target",
        target,
        "--method",
        method,
        "--payload",
        payload_path,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=duration + warmup + 120
    )
    if res.returncode != 0:
        raise RuntimeError(f"client failed ({res.returncode}): {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    client_main()
