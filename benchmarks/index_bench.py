"""The VectorIndexer through a Flow: indexing throughput and search latency at 10k items,
faiss exact (IndexFlatIP) against HNSW, with recall@10 of HNSW measured against exact.

For each index kind, a fresh ``Flow(mesh=M)`` with ``services.vector_indexer:VectorIndexer``
(512-d, 2 shards, ``/search`` polled on ALL, writes polled on ID: each document to the shard
owning its id; ``--write-polling ANY`` sends each request to one shard, the layout before
polling ID, for comparison):

- indexes N generated items (clustered vectors: 200 centroids plus noise, tags with a
  category), in requests of 100 documents, through the gateway over gRPC (16 in flight);
- loads ``/search`` (1 query, limit 10) from a separate client process at c=1 (latency) and
  c=16 (throughput);
- for HNSW, compares the top 10 of 200 queries with the exact top 10 (numpy over all items).

    .venv/bin/python benchmarks/index_bench.py [--items 10000] [--mesh direct]
        [--write-polling ID|ANY] [--kinds exact,hnsw] [--index-only]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

import _load  # noqa: E402
import numpy as np  # noqa: E402

from meshflow import AsyncClient, Document, DocumentArray, Flow  # noqa: E402
from meshflow.client.messages import build_request  # noqa: E402

DIM = 512


def dataset(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((200, DIM)).astype(np.float32)
    items = centroids[rng.integers(0, 200, n)] + 0.5 * rng.standard_normal((n, DIM))
    asks = centroids[rng.integers(0, 200, queries)] + 0.5 * rng.standard_normal((queries, DIM))
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    asks /= np.linalg.norm(asks, axis=1, keepdims=True)
    return items.astype(np.float32), asks.astype(np.float32)


async def index_all(port: int, items: np.ndarray) -> float:
    docs = DocumentArray(
        Document(id=f"item-{i}", embedding=v, tags={"category": f"c{i % 20}"})
        for i, v in enumerate(items)
    )
    started = time.perf_counter()
    async with AsyncClient(port=port, max_in_flight=16, timeout=600) as client:
        async for _ in client.stream("/index", docs, request_size=100):
            pass
    return time.perf_counter() - started


def run_kind(
    args: argparse.Namespace, kind: str, items: np.ndarray, asks: np.ndarray
) -> list[dict[str, Any]]:
    tmpdir = tempfile.mkdtemp(prefix="meshflow-index-bench-")
    threshold = 10**12 if kind == "exact" else 0
    flow = Flow(name=f"index-{kind}", workspace=tmpdir, mesh=args.mesh).add(
        uses="services.vector_indexer:VectorIndexer",
        name="index",
        uses_with={"dim": DIM, "hnsw_threshold": threshold},
        shards=2,
        polling={"/index": args.write_polling, "/search": "ALL", "*": "ALL"},
    )
    rows: list[dict[str, Any]] = []
    try:
        flow.start()
        assert flow.port is not None
        seconds = asyncio.run(index_all(flow.port, items))
        rows.append(
            {
                "bench": f"meshflow-{args.mesh}-index",
                "case": f"index {kind}",
                "write_polling": args.write_polling,
                "items": len(items),
                "seconds": round(seconds, 2),
                "docs_s": round(len(items) / seconds, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        if args.index_only:
            return rows
        found = flow.post(
            "/search", [Document(embedding=q) for q in asks], parameters={"limit": 10}
        )
        top = [[m.id for m in q.matches] for q in found]
        exact = np.argsort(-(asks @ items.T), axis=1)[:, :10]
        recall = np.mean(
            [len(set(t) & {f"item-{j}" for j in e}) / 10 for t, e in zip(top, exact, strict=True)]
        )
        _, payload = build_request(
            "/search", [Document(embedding=asks[0])], parameters={"limit": 10}
        )
        path = os.path.join(tmpdir, "search.bin")
        with open(path, "wb") as fh:
            fh.write(payload)
        for conc in (1, 16):
            row = _load.measure_case(
                bench=f"meshflow-{args.mesh}-index",
                case=f"search {kind}",
                docs_per_req=1,
                target=f"127.0.0.1:{flow.port}",
                method="/meshflow.v1.GatewayService/Post",
                payload_path=path,
                concurrency=conc,
                duration=args.duration,
                warmup=args.warmup,
                server_pids=flow.pids.values(),
                extra={"items": len(items), "recall_at_10": round(float(recall), 4)},
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        flow.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--mesh", choices=["direct", "envoy"], default="direct")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--write-polling", choices=["ID", "ANY"], default="ID")
    p.add_argument("--kinds", default="exact,hnsw", help="index kinds, comma-separated")
    p.add_argument("--index-only", action="store_true", help="skip the search measurements")
    args = p.parse_args()
    items, asks = dataset(args.items, args.queries)
    rows = []
    for kind in args.kinds.split(","):
        rows += run_kind(args, kind, items, asks)
    print()
    print(
        f"VectorIndexer, {args.items} items x {DIM}-d, 2 shards, {args.mesh} mesh, "
        f"/index polled {args.write_polling}:"
    )
    for r in rows:
        if r["case"].startswith("index"):
            print(f"  {r['case']:<13} {r['docs_s']:>9.0f} docs/s ({r['seconds']} s)")
        else:
            print(
                f"  {r['case']:<13} c={r['concurrency']:<3} {r['rps']:>7.0f} req/s  "
                f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                f"recall@10 {r['recall_at_10']:.3f}"
            )


if __name__ == "__main__":
    main()
