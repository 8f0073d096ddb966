"""Shop the look, measured: retrieval quality on held-out queries, indexing throughput end to
end through the Flow, and search latency at 10k items with faiss exact against HNSW.

The Flow is the app's own (``services/shop_the_look/flow.yml``: image and text encoders in
parallel, the indexer in 2 shards, the ranker, Envoy sidecars, JWT on the gateway).

1. **Quality.** Index the 256-product catalog, then search with held-out queries, new
   renderings with seeds the catalog never used (random category, colour and pattern):
   photo queries, text queries (``"<colour> <pattern> <category>"``) and both together.
   Reports precision@10 by category (32 products per category: 1.0 is reachable; chance is
   1/8), by colour and by pattern.
2. **Scale.** Index ``--items`` generated products (renderings of the same labels with other
   seeds) through the Flow, 16 per request, 4 requests in flight; report docs/s. Then search
   over GraphQL, one query at a time, photo queries and text queries: p50/p99 latency. Then
   restart the Flow on the same workspace with ``hnsw_threshold`` below the item count (the
   indexer rebuilds its faiss spaces as HNSW from SQLite) and search again.

    .venv/bin/python benchmarks/shop_bench.py [--items 10240] [--queries 64] [--mesh envoy]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT]

import httpx  # noqa: E402
import yaml  # noqa: E402

from meshflow import Flow  # noqa: E402
from services.shop_the_look import app, catalog  # noqa: E402

PATTERN_WORDS = {
    "plain": "plain",
    "striped": "striped",
    "dotted": "polka-dot",
    "checked": "checked",
}


def start(workspace: str, folder: str, mesh: str, hnsw_threshold: int | None = None) -> Flow:
    config = app.FLOW_YML
    if hnsw_threshold is not None:  # the app's flow.yml with another threshold
        with open(app.FLOW_YML, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
        for executor in data["executors"]:
            if executor["name"] == "indexer":
                executor["uses_with"]["hnsw_threshold"] = hnsw_threshold
        config = os.path.join(workspace, "flow-hnsw.yml")
        with open(config, "w", encoding="utf-8") as fh:
            yaml.safe_dump(data, fh)
    flow = app.build_flow(
        workspace, catalog_dir=folder, graphql_port=None, mesh=mesh, config=config
    )
    return flow.start()


def index_all(flow: Flow, docs: Any) -> float:
    """Index ``docs`` through the Flow, 16 per request, 4 requests in flight; docs/s."""
    batches = [docs[i : i + 16] for i in range(0, len(docs), 16)]
    started = time.perf_counter()
    done = 0

    def one(part: Any) -> int:
        return app.index(flow, part, batch=16)

    with ThreadPoolExecutor(4) as pool:
        for n in pool.map(one, batches):
            done += n
            if done % 1024 < 16:
                print(f"  indexed {done}/{len(docs)}", file=sys.stderr, flush=True)
    return len(docs) / (time.perf_counter() - started)


def quality(flow: Flow, n: int) -> dict[str, Any]:
    reader = app.token()
    url = flow.graphql_url
    out: dict[str, Any] = {}
    queries = catalog.queries(n, seed=11)
    for kind in ("image", "text", "image+text"):
        hits: dict[str, list[float]] = {"category": [], "colour": [], "pattern": []}
        for q in queries:
            words = f"{q.colour} {PATTERN_WORDS[q.pattern]} {q.category}"
            photo = app.image_bytes(catalog.render(q)) if "image" in kind else None
            text = words if "text" in kind else None
            matches = app.search(url, reader, image=photo, text=text, limit=10)
            for key in hits:
                hits[key].append(
                    sum(m[key] == getattr(q, key) for m in matches) / max(len(matches), 1)
                )
        out[kind] = {f"p@10 {k}": round(statistics.mean(v), 3) for k, v in hits.items()}
    return out


def latency(flow: Flow, n: int) -> dict[str, Any]:
    """Search latency from one client, one query at a time, keeping its connection."""
    http = httpx.Client()
    reader = app.token()
    url = flow.graphql_url
    rng = random.Random(5)
    out = {}
    for kind in ("image", "text"):
        times = []
        for i, q in enumerate(catalog.queries(n, seed=23)):
            photo = app.image_bytes(catalog.render(q)) if kind == "image" else None
            words = f"{q.colour} {rng.choice(list(PATTERN_WORDS.values()))} {q.category}"
            started = time.perf_counter()
            matches = app.search(
                url, reader, image=photo, text=None if photo else words, client=http
            )
            if i >= 3:  # warm-up
                times.append((time.perf_counter() - started) * 1e3)
            assert len(matches) == 10
        times.sort()
        out[kind] = {
            "p50_ms": round(times[len(times) // 2], 1),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
        }
    http.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=10240, help="items for the scale part")
    p.add_argument("--queries", type=int, default=64, help="held-out queries for quality")
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--mesh", choices=("envoy", "direct"), default="envoy")
    p.add_argument("--skip-scale", action="store_true")
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="meshflow-shop-bench-")
    os.environ.setdefault(app.SECRET_ENV, "bench-" + "s" * 40)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "mesh": args.mesh,
    }
    try:
        # 1. quality on the shipped catalog
        folder = os.path.join(root, "catalog")
        items = catalog.products()
        catalog.write(items, folder)
        flow = start(os.path.join(root, "q"), folder, args.mesh)
        try:
            report["catalog"] = len(items)
            report["catalog_index_docs_s"] = round(
                index_all(flow, app.catalog_documents(items, folder)), 1
            )
            report["quality"] = quality(flow, args.queries)
        finally:
            flow.close()
        print(json.dumps(report, indent=1), flush=True)
        if args.skip_scale:
            return
        # 2. scale: exact, then HNSW on the same stored items
        variants = max(1, -(-args.items // len(items)))
        many = catalog.products(variants=variants, seed=3)[: args.items]
        big = os.path.join(root, "big")
        started = time.perf_counter()
        catalog.write(many, big)
        report["render_s"] = round(time.perf_counter() - started, 1)
        ws = os.path.join(root, "scale")
        flow = start(ws, big, args.mesh)
        try:
            report["items"] = len(many)
            report["index_docs_s"] = round(index_all(flow, app.catalog_documents(many, big)), 1)
            report["exact"] = latency(flow, args.latency_queries)
        finally:
            flow.close()
        flow = start(ws, big, args.mesh, hnsw_threshold=min(1000, len(many) - 1))
        try:
            report["hnsw"] = latency(flow, args.latency_queries)
        finally:
            flow.close()
        print(json.dumps(report, indent=1), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
