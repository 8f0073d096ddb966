"""meshflow on the seed Flow shape: gateway + 2 chained executors, over gRPC.

Same loads and load generator as ``raw_echo.py`` and ``jina_flow.py``: a plain gRPC client in
its own process sends serialized ``DataRequest`` bytes to ``GatewayService/Post``; 1-doc
requests and 64-doc requests carrying 512-d float32 embeddings, at concurrency 1 and 32.
Reports requests/s, docs/s, p50/p99, start-up (construct + ready, import excluded) and the
summed peak RSS of the Flow's processes::

    .venv/bin/python benchmarks/flow_bench.py [--duration 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _load  # noqa: E402
import numpy as np  # noqa: E402

from meshflow import Document, DocumentArray, Executor, Flow, requests  # noqa: E402
from meshflow.client.messages import build_request, read_response  # noqa: E402
from meshflow.wire import GATEWAY_POST  # noqa: E402

CASES = [("1-doc", 1, 0), ("64-doc-512d", 64, 512)]  # (name, docs per request, embedding dim)
CONCURRENCIES = [1, 32]


class Noop(Executor):
    """Looks at every document and changes nothing: the framework's own cost."""

    @requests
    async def noop(self, docs: DocumentArray, **kwargs: Any) -> None:
        for _ in docs:
            pass


def payload(n_docs: int, dim: int) -> bytes:
    rng = np.random.default_rng(0)
    docs = DocumentArray(
        Document(text="hello world")
        if dim == 0
        else Document(embedding=rng.random(dim, dtype=np.float32))
        for _ in range(n_docs)
    )
    _, data = build_request("/", docs)
    return data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=CONCURRENCIES)
    p.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S")
    p.add_argument("--json-out", help="also write all result lines to this file")
    p.add_argument(
        "--mesh",
        choices=["direct", "envoy"],
        default="direct",
        help="'envoy': every executor and the gateway behind Envoy sidecars with mTLS",
    )
    args = p.parse_args()

    import grpc

    vers = _load.versions("meshflow", "grpcio", "protobuf", "numpy")
    results = []
    tmpdir = tempfile.mkdtemp(prefix="meshflow-bench-")
    started = time.perf_counter()
    flow = Flow(workspace=tmpdir, mesh=args.mesh).add(uses=Noop).add(uses=Noop)
    with flow:
        startup_s = time.perf_counter() - started
        target = f"127.0.0.1:{flow.port}"
        paths = {}
        for name, n_docs, dim in CASES:
            data = payload(n_docs, dim)
            paths[name] = os.path.join(tmpdir, f"{name}.bin")
            with open(paths[name], "wb") as fh:
                fh.write(data)
            with grpc.insecure_channel(target) as ch:  # the answer is right before we load it
                answer = read_response(ch.unary_unary(GATEWAY_POST)(data, timeout=30))
                assert len(answer.docs) == n_docs
        server_pids = list(flow.pids.values())
        for rnd in range(args.repeat):
            for name, n_docs, _dim in CASES:
                for conc in args.concurrency:
                    row = _load.measure_case(
                        bench=f"meshflow-{args.mesh}",
                        case=name,
                        docs_per_req=n_docs,
                        target=target,
                        method=GATEWAY_POST,
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
        mem = _load.memory_report(server_pids)
    shutil.rmtree(tmpdir)

    agg = _load.aggregate(results)
    summary = {
        "bench": f"meshflow-{args.mesh}",
        "mesh": args.mesh,
        "summary": True,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "versions": vers,
        "startup_s": round(startup_s, 3),
        "processes": len(server_pids),
        "peak_rss_sum_mb": mem["peak_rss_sum_mb"],
        "pss_sum_mb": mem["pss_sum_mb"],
        "per_process": mem["processes"],
    }
    _load.emit(results, agg, summary, args.json_out)
    _load.finish(
        results,
        agg,
        [
            f"meshflow {vers['meshflow']}, grpcio {vers['grpcio']}, protobuf {vers['protobuf']}, "
            f"Python {vers['python']}, {os.cpu_count()} CPUs",
            f"Flow gateway + 2 no-op executors (mesh={args.mesh!r}): start-up {startup_s:.2f} s, "
            f"{len(server_pids)} processes, peak RSS sum {mem['peak_rss_sum_mb']} MB "
            f"(PSS {mem['pss_sum_mb']} MB)",
            f"median of {args.repeat} rounds of {args.duration:g} s "
            f"(after {args.warmup:g} s warm-up)",
        ],
    )


if __name__ == "__main__":
    main()
