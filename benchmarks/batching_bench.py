"""Dynamic batching, measured on the app's own Flow (issue 17).

1. **Ceiling.** The app's TextEncoder in this process, no framework: texts/s at one text per
   call and at ``--preferred`` texts per call.
2. **The Flow, batched and not, side by side.** The app's Flow (``services/shop_the_look/
   flow.yml``: Envoy mesh, JWT on the gateway, encoders in parallel, the indexer in 2 shards,
   the ranker) as shipped (encoders batch, ``timeout: auto``), then the same Flow whose
   encoders do not batch (subclasses in ``_unbatched.py``, the same code without
   ``@dynamic_batching``). The catalog (256 products) is indexed first. Text queries over
   GraphQL from a separate client process (``_http_load.py``): p50 at concurrency 1, and
   queries/s at 16 and 32; photo queries: p50 at concurrency 1 and queries/s at 8.
3. **The bound.** With every core busy, queries/s is the machine's CPU over the CPU a query
   costs in all the Flow's processes. Batching shrinks only the text encoder's share, so the
   largest batched / unbatched ratio this machine allows is the unbatched CPU per query over
   the batched one with the encoder at the ceiling's CPU per text (``speedup_bound``).
4. **Queries grouped by the client** (``--queries-per-request K``): the same 16 text queries
   in flight, K to a GraphQL request, so that every hop after the door is shared by K
   queries. Against the unbatched Flow's one query a request at 16
   (``grouped_over_unbatched_c16``): the most any batcher in front of the Flow could give, as
   each query would still cost its own HTTP request, JWT and GraphQL operation.

Prints one JSON report; figures go to ``benchmarks/RESULTS.md`` by hand::

    .venv/bin/python benchmarks/batching_bench.py [--duration 10] [--mesh envoy]

Run it on an otherwise idle machine: every figure is a throughput or a latency of processes
that share its cores.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

import yaml  # noqa: E402
from _http_load import CLIENTS, measure_http_case  # noqa: E402

from meshflow import Flow  # noqa: E402
from services.shop_the_look import app, catalog  # noqa: E402

TEXT_QUERY = "red striped dress"


def ceiling(preferred: int, seconds: float) -> dict[str, float]:
    """Texts/s of the TextEncoder alone, one text per call and ``preferred`` per call."""
    from services.text_encoder import TextEncoder

    encoder = TextEncoder(modality="text")
    out = {}
    for size in (1, preferred):
        texts = [f"{TEXT_QUERY} {i}" for i in range(size)]
        encoder.embed(texts)  # warm-up
        done = 0
        started, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            encoder.embed(texts)
            done += size
        out[f"texts_s_at_{size}"] = round(done / (time.perf_counter() - started), 1)
        # all of its threads: what one text costs the machine, the Flow's other processes aside
        out[f"cpu_ms_per_text_at_{size}"] = round(1000 * (time.process_time() - cpu) / done, 2)
    return out


def bound(report: dict[str, Any], case: str, preferred: int) -> dict[str, float] | None:
    """The largest queries/s ratio (batched / unbatched) the machine allows on ``case`` when
    every core is busy: the unbatched Flow's CPU per query against the batched Flow's with its
    text encoder at the ceiling's cost per text (``preferred`` per call) and every other
    process as measured. Batching only shrinks the encoder's share."""
    ceil = report.get("ceiling")
    batched, unbatched = report["batched"].get(case), report["unbatched"].get(case)
    if not ceil or not batched or not unbatched:
        return None
    encoder = batched["cpu_ms_per_req"].get("text_encoder", 0.0)
    others = batched["server_cpu_ms_per_req"] - encoder
    best = others + ceil[f"cpu_ms_per_text_at_{preferred}"]
    return {
        "unbatched_cpu_ms": unbatched["server_cpu_ms_per_req"],
        "batched_cpu_ms": batched["server_cpu_ms_per_req"],
        "batched_encoder_cpu_ms": encoder,
        "batched_other_cpu_ms": round(others, 2),
        "max_ratio": round(unbatched["server_cpu_ms_per_req"] / best, 2),
    }


def flow_config(workspace: str, batched: bool, fork_server: bool = True) -> str:
    """The app's flow.yml, or the same with encoders that do not batch (and, with
    ``fork_server=False``, its processes started fresh)."""
    with open(app.FLOW_YML, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    unbatched = os.path.join(HERE, "_unbatched.py")
    for executor in data["executors"]:
        if executor["name"] in ("text_encoder", "image_encoder") and not batched:
            cls = "TextEncoder" if executor["name"] == "text_encoder" else "ImageEncoder"
            executor["uses"] = f"{unbatched}:{cls}"
            executor.pop("uses_dynamic_batching", None)
    data["with"].pop("static", None)
    data["with"]["fork_server"] = fork_server
    path = os.path.join(workspace, f"flow-{'batched' if batched else 'unbatched'}.yml")
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh)
    return path


def body(path: str, *docs: dict[str, Any]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump({"query": app.SEARCH, "variables": {"docs": list(docs), "limit": 10}}, fh)
    return path


def server_pids(flow: Flow) -> dict[str, int]:
    runtime: Any = flow._runtime  # the bench reads the processes' CPU
    pids = {}
    for replica in runtime.replicas:
        pids[f"{replica.deployment}-s{replica.shard}-r{replica.replica}"] = replica.executor.pid
        if replica.sidecar is not None:
            pids[f"envoy-s{replica.deployment}{replica.shard}"] = replica.sidecar.pid
    pids["gateway"] = runtime.gateway.process.pid
    if runtime.gateway.sidecar is not None:
        pids["envoy-sgateway"] = runtime.gateway.sidecar.pid
    return {k: v for k, v in pids.items() if v}


def cpu_by_component(by_process: dict[str, float]) -> dict[str, float]:
    """CPU ms per request summed by deployment (replicas and shards together)."""
    out: dict[str, float] = {}
    for name, ms in by_process.items():
        key = name.split("-s")[0]
        out[key] = round(out.get(key, 0.0) + ms, 2)
    return out


def measure_flow(
    root: str, folder: str, items: Any, *, batched: bool, mesh: str, args: argparse.Namespace
) -> dict[str, Any]:
    workspace = os.path.join(root, "batched" if batched else "unbatched")
    os.makedirs(workspace)
    flow = app.build_flow(
        workspace,
        catalog_dir=folder,
        graphql_port=None,
        mesh=mesh,
        config=flow_config(workspace, batched, fork_server=args.fork_server == "on"),
    ).start()
    try:
        for start in range(0, len(items), 16):
            app.index(flow, items[start : start + 16], batch=16)
        headers = {"authorization": f"Bearer {app.token()}"}
        text = body(os.path.join(workspace, "text.json"), {"text": TEXT_QUERY})
        photo_bytes = app.image_bytes(catalog.render(catalog.queries(1, seed=3)[0]))
        photo = body(
            os.path.join(workspace, "photo.json"),
            {"image": base64.b64encode(photo_bytes).decode()},
        )
        pids = server_pids(flow)
        out: dict[str, Any] = {}
        cases = [("text", text, (1, 16, 32), 1)]
        if args.queries_per_request > 1:  # the same 16 queries in flight, k to a request
            k = args.queries_per_request
            texts = [{"text": f"{TEXT_QUERY} {i}"} for i in range(k)]
            grouped = body(os.path.join(workspace, "texts.json"), *texts)
            cases.append((f"text x{k}", grouped, (max(1, 16 // k),), k))
        if not args.text_only:
            cases.append(("photo", photo, (1, 8), 1))
        for kind, path, levels, per_request in cases:
            for concurrency in levels:
                row = measure_http_case(
                    bench="batching",
                    case=f"{kind} c{concurrency}",
                    docs_per_req=per_request,
                    url=flow.graphql_url,
                    body_path=path,
                    concurrency=concurrency,
                    duration=args.duration,
                    warmup=args.warmup,
                    server_pids=pids,
                    headers=headers,
                    client=args.http_client,
                )
                keys = ("rps", "p50_ms", "p99_ms", "errors", "first_error", "server_cpu_ms_per_req")
                case = out[f"{kind} c{concurrency}"] = {k: row[k] for k in keys if k in row}
                case["cpu_ms_per_req"] = cpu_by_component(row["cpu_ms_per_req_by_process"])
                if per_request > 1:
                    case["queries_per_s"] = round(row["rps"] * per_request, 1)
                    case["cpu_ms_per_query"] = round(row["server_cpu_ms_per_req"] / per_request, 2)
                print(f"  {'batched' if batched else 'unbatched'} {kind} c{concurrency}: "
                      f"{out[f'{kind} c{concurrency}']}", file=sys.stderr, flush=True)  # fmt: skip
        return out
    finally:
        flow.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per load case")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--preferred", type=int, default=32, help="the ceiling's batch size")
    p.add_argument("--mesh", choices=("envoy", "direct"), default="envoy")
    p.add_argument("--skip-ceiling", action="store_true")
    p.add_argument(
        "--fork-server",
        choices=("on", "off"),
        default="on",
        help="the Flows' processes forked from a fork server (the default) or started fresh",
    )
    p.add_argument("--text-only", action="store_true", help="skip the photo queries")
    p.add_argument(
        "--queries-per-request",
        type=int,
        default=0,
        metavar="K",
        help="also send the 16 text queries in flight K to a GraphQL request (16/K requests at "
        "once): what the Flow serves when its hops are shared by K queries, the most a "
        "batcher in front of the Flow could give",
    )
    p.add_argument(
        "--http-client",
        choices=sorted(CLIENTS),
        default="httpx",
        help="the load client (_http_load.py --client)",
    )
    args = p.parse_args()
    os.environ.setdefault(app.SECRET_ENV, "bench-" + "s" * 40)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "mesh": args.mesh,
    }
    if not args.skip_ceiling:
        report["ceiling"] = ceiling(args.preferred, args.duration)
        print(json.dumps(report["ceiling"]), file=sys.stderr, flush=True)
    root = tempfile.mkdtemp(prefix="meshflow-batching-bench-")
    try:
        folder = os.path.join(root, "catalog")
        products = catalog.products()
        catalog.write(products, folder)
        items = app.catalog_documents(products, folder)
        for batched in (True, False):
            report["batched" if batched else "unbatched"] = measure_flow(
                root, folder, items, batched=batched, mesh=args.mesh, args=args
            )
        for case in report["batched"]:
            b, u = report["batched"][case], report["unbatched"][case]
            report.setdefault("speedup_rps", {})[case] = round(b["rps"] / max(u["rps"], 1e-9), 2)
        for case in ("text c16", "text c32"):
            found = bound(report, case, args.preferred)
            if found is not None:
                report.setdefault("speedup_bound", {})[case] = found
        for case, row in report["batched"].items():
            if "queries_per_s" in row:  # against the unbatched Flow's one query a request
                unbatched = report["unbatched"]["text c16"]["rps"]
                ratio = round(row["queries_per_s"] / max(unbatched, 1e-9), 2)
                report.setdefault("grouped_over_unbatched_c16", {})[case] = ratio
        print(json.dumps(report, indent=1), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
