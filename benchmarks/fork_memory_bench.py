"""What a fork server would save: Python processes that share their imports, measured alone.

meshflow starts every Python process of a Flow fresh (``python -m meshflow ...``), so each
one loads numpy, grpc, protobuf and meshflow itself. Jina forks its children from the
orchestrator, so they share those pages. This script measures the difference on processes
of the same shape, outside any Flow:

* **spawn**: N fresh interpreters each import the modules an executor imports, start a
  grpc.aio server, and call it 2,000 times over loopback;
* **fork**: one parent (the fork server) imports the same modules, freezes its objects out
  of the garbage collector's reach (``gc.freeze()``, so collections do not write to the
  shared pages), and forks N children that do the same work.

After the calls, with every process still alive, it sums RSS and PSS (``/proc/PID/
smaps_rollup``) over the children, and over the fork server too (it stays, to fork the next
replica)::

    .venv/bin/python benchmarks/fork_memory_bench.py [--children 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import subprocess
import sys
import time

MODULES = (
    "numpy",
    "grpc",
    "grpc.aio",
    "google.protobuf",
    "meshflow.proto.v1.services_pb2",
    "meshflow.executor.runtime",
    "meshflow.cli.run",
)
CALLS = 2000
SETTLE = 6.0  # seconds the orchestrator waits before measuring
LINGER = 12.0  # seconds a child stays alive after its calls


def _imports() -> None:
    for name in MODULES:
        importlib.import_module(name)


def _work() -> None:
    """A grpc.aio server on loopback, called CALLS times, then kept alive to be measured."""
    import grpc
    from grpc import aio

    async def main() -> None:
        server = aio.server()

        async def echo(request: bytes, context: object) -> bytes:
            return request

        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/bench.Echo/Echo")
            for _ in range(CALLS):
                await call(b"x" * 100)
        await asyncio.sleep(LINGER)
        await server.stop(None)

    asyncio.run(main())


def _memory(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            key, *value = line.split()
            if key in ("Rss:", "Pss:"):
                out[key[:-1].lower()] = int(value[0]) / 1024
    return out


def _summed(pids: list[int]) -> dict[str, float]:
    found = [_memory(pid) for pid in pids]
    return {k: round(sum(m[k] for m in found), 1) for k in ("rss", "pss")}


def spawn(children: int) -> dict[str, float]:
    procs = [subprocess.Popen([sys.executable, __file__, "--child"]) for _ in range(children)]
    try:
        time.sleep(SETTLE)
        return _summed([p.pid for p in procs])
    finally:
        for proc in procs:
            proc.wait(timeout=LINGER + 30)


def fork(children: int) -> dict[str, float]:
    """Forks from a fresh fork server (this script again), so that the orchestrator's own
    state never reaches the children."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--fork-server", str(children)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        pids = [int(x) for x in proc.stdout.readline().split()]
        time.sleep(SETTLE)
        kids = _summed(pids[1:])
        server = _summed(pids[:1])
        return {
            "children_rss": kids["rss"],
            "children_pss": kids["pss"],
            "server_rss": server["rss"],
            "server_pss": server["pss"],
            "rss": round(kids["rss"] + server["rss"], 1),
            "pss": round(kids["pss"] + server["pss"], 1),
        }
    finally:
        proc.wait(timeout=LINGER + 30)


def fork_server(children: int) -> None:
    _imports()
    gc.collect()
    gc.freeze()
    pids = []
    for _ in range(children):
        pid = os.fork()
        if pid == 0:
            try:
                _work()
            finally:
                os._exit(0)
        pids.append(pid)
    print(os.getpid(), *pids, flush=True)
    for pid in pids:
        os.waitpid(pid, 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--children", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fork-server", type=int, metavar="N", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _imports()
        _work()
        return
    if args.fork_server:
        fork_server(args.fork_server)
        return
    spawned = spawn(args.children)
    forked = fork(args.children)
    print(f"{args.children} processes, summed MB (RSS / PSS):")
    print(f"  spawned fresh:            {spawned['rss']:7.1f} / {spawned['pss']:7.1f}")
    print(
        f"  forked, children only:    {forked['children_rss']:7.1f} / {forked['children_pss']:7.1f}"
    )
    print(f"  forked, with the server:  {forked['rss']:7.1f} / {forked['pss']:7.1f}")
    print(
        f"  difference (with server): {forked['rss'] - spawned['rss']:+7.1f} / "
        f"{forked['pss'] - spawned['pss']:+7.1f}"
    )


if __name__ == "__main__":
    main()
