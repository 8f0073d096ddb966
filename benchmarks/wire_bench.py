"""Issue 18's workload, side by side in one run: executors that change every document.

Gateway + 2 chained executors; each executor appends a character to every text and adds 1.0
to every embedding, one document at a time (``for doc in docs``), as real executors do (the
``-bulk`` setups do it through ``docs.texts`` and ``docs.embeddings`` instead). For each
setup (the ``direct`` and ``envoy`` (mTLS) meshes, and ``host``: the Envoy mesh with one
Envoy for the Flow; ``async`` and ``sync`` executor methods) and each case (64 docs x 512-d
float32 with text, and 1 doc with text), the same load is sent in both wire layouts of the
documents: ``rows`` (``DataRequest.docs``, one message per document: what clients sent
before) and ``columns`` (``DataRequest.columns``, see ``docs/wire.md``). The ceiling is the
raw bytes-only grpc.aio echo of ``raw_echo.py`` (gateway + 2 echo processes) loaded with
payloads of the same sizes. Prints docs/s and the share of the ceiling::

    .venv/bin/python benchmarks/wire_bench.py [--duration 5] [--repeat 3]
        [--setups direct-async direct-sync envoy-async envoy-sync] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _load  # noqa: E402
import numpy as np  # noqa: E402
import raw_echo  # noqa: E402
from http_bench import mesh_options  # noqa: E402

from meshflow import Document, DocumentArray, Executor, Flow, requests  # noqa: E402
from meshflow.client.messages import build_request, read_response  # noqa: E402
from meshflow.wire import GATEWAY_POST  # noqa: E402

CASES = [("64-doc-512d", 64, 512), ("1-doc", 1, 0)]  # (name, docs per request, embedding dim)
LAYOUTS = ("rows", "columns")
SETUPS = (
    "direct-async",
    "direct-sync",
    "envoy-async",
    "envoy-sync",
    "direct-async-bulk",
    "envoy-async-bulk",
    "host-async",  # the Envoy mesh with one Envoy for the Flow (envoy_proxy='host')
    "host-sync",
    "host-async-bulk",
    "direct-sync-bulk",
    "envoy-sync-bulk",
    "host-sync-bulk",
)
HOST = "envoy-host"  # http_bench's name for the ``host`` setups' mesh


class TouchAsync(Executor):
    """Changes every document: appends to its text, adds 1.0 to its embedding."""

    @requests
    async def touch(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.text += "x"
            if doc.embedding is not None:
                doc.embedding = doc.embedding + 1.0


class TouchSync(Executor):
    """The same work in a sync method (run in the executor's thread pool)."""

    @requests
    def touch(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.text += "x"
            if doc.embedding is not None:
                doc.embedding = doc.embedding + 1.0


class TouchBulk(Executor):
    """The same work on the whole request at once, through the bulk attributes (with
    columnar documents no Document object is built)."""

    @requests
    async def touch(self, docs: DocumentArray, **kwargs: Any) -> None:
        docs.texts = [text + "x" for text in docs.texts]
        embeddings = docs.embeddings
        if embeddings is not None:
            docs.embeddings = embeddings + 1.0


class TouchSyncBulk(Executor):
    """The bulk work in a sync method (run in the executor's thread pool)."""

    @requests
    def touch(self, docs: DocumentArray, **kwargs: Any) -> None:
        docs.texts = [text + "x" for text in docs.texts]
        embeddings = docs.embeddings
        if embeddings is not None:
            docs.embeddings = embeddings + 1.0


def payload(n_docs: int, dim: int, layout: str) -> bytes:
    rng = np.random.default_rng(0)
    docs = DocumentArray(
        Document(
            text="hello world",
            embedding=rng.random(dim, dtype=np.float32) if dim else None,
        )
        for _ in range(n_docs)
    )
    _, data = build_request("/", docs, columnar=layout == "columns")
    return data


def write(tmpdir: str, name: str, data: bytes) -> str:
    path = os.path.join(tmpdir, f"{name}.bin")
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def measure(
    args: argparse.Namespace,
    bench: str,
    case: str,
    docs: int,
    target: str,
    method: str,
    path: str,
    pids: list[int],
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    rows = []
    for conc in args.concurrency:
        row = _load.measure_case(
            bench=bench,
            case=case,
            docs_per_req=docs,
            target=target,
            method=method,
            payload_path=path,
            concurrency=conc,
            duration=args.duration,
            warmup=args.warmup,
            server_pids=pids,
            quiet_wait=args.quiet_wait,
            extra=extra,
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def run_ceiling(
    args: argparse.Namespace, payloads: dict[tuple[str, str], bytes], tmpdir: str, rnd: int
) -> list[dict[str, Any]]:
    """The raw echo chain, loaded with random bytes of each case's columnar payload size."""
    procs: list[subprocess.Popen[str]] = []
    rows: list[dict[str, Any]] = []
    try:
        procs += [raw_echo._start(["--role", "exec"]), raw_echo._start(["--role", "exec"])]
        p1, p2 = (raw_echo._wait_ready(p) for p in procs)
        upstreams = ["--upstream", f"127.0.0.1:{p1}", "--upstream", f"127.0.0.1:{p2}"]
        procs.append(raw_echo._start(["--role", "gateway", *upstreams]))
        target = f"127.0.0.1:{raw_echo._wait_ready(procs[2])}"
        for name, n_docs, _dim in CASES:
            size = len(payloads[(name, "columns")])
            path = write(tmpdir, f"raw-{name}", os.urandom(size))
            extra = {"setup": "raw echo", "layout": "-", "round": rnd}
            rows += measure(
                args,
                "raw_echo",
                name,
                n_docs,
                target,
                raw_echo.METHOD,
                path,
                [p.pid for p in procs],
                extra,
            )
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return rows


def run_setup(
    args: argparse.Namespace, setup: str, paths: dict[tuple[str, str], str], rnd: int
) -> list[dict[str, Any]]:
    import grpc

    mesh, kind, *bulk = setup.split("-")
    if bulk:
        uses: type[Executor] = TouchBulk if kind == "async" else TouchSyncBulk
    else:
        uses = TouchAsync if kind == "async" else TouchSync
    workspace = tempfile.mkdtemp(prefix="meshflow-wire-")
    rows: list[dict[str, Any]] = []
    try:
        options = mesh_options(HOST if mesh == "host" else mesh)
        flow = Flow(workspace=workspace, fork_server=args.fork_server == "on", **options)
        with flow.add(uses=uses).add(uses=uses):
            target = f"127.0.0.1:{flow.port}"
            pids = list(flow.pids.values())
            for name, n_docs, _dim in CASES:
                for layout in LAYOUTS:
                    with open(paths[(name, layout)], "rb") as fh:
                        data = fh.read()
                    with grpc.insecure_channel(target) as ch:  # right before we load it
                        answer = read_response(ch.unary_unary(GATEWAY_POST)(data, timeout=30))
                    assert answer.docs.texts == ["hello worldxx"] * n_docs, answer.docs.texts[:2]
                    extra = {"setup": setup, "layout": layout, "round": rnd}
                    rows += measure(
                        args,
                        f"meshflow-{setup}",
                        name,
                        n_docs,
                        target,
                        GATEWAY_POST,
                        paths[(name, layout)],
                        pids,
                        extra,
                    )
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (setup, case, layout, concurrency), with the share of the ceiling."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["setup"], row["case"], row["layout"], row["concurrency"])
        groups.setdefault(key, []).append(row)
    medians = {
        key: {
            "docs_s": statistics.median(r["docs_s"] for r in rs),
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "cpu": statistics.median(r["server_cpu_ms_per_req"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
            "runs": [round(r["docs_s"]) for r in rs],
            "foreign": max(r["foreign_pct"] for r in rs),
        }
        for key, rs in groups.items()
    }
    out = []
    for (setup, case, layout, conc), m in medians.items():
        ceiling = medians.get(("raw echo", case, "-", conc))
        share = 100.0 * m["docs_s"] / ceiling["docs_s"] if ceiling else float("nan")
        # Server CPU of the ceiling over this setup's, per request: steadier than docs/s
        # on a shared machine.
        cpu_share = 100.0 * ceiling["cpu"] / m["cpu"] if ceiling and m["cpu"] else float("nan")
        out.append(
            {
                "setup": setup,
                "case": case,
                "layout": layout,
                "concurrency": conc,
                **m,
                "share_pct": round(share, 1),
                "cpu_share_pct": round(cpu_share, 1),
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=[32])
    p.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    p.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S")
    p.add_argument("--json-out", help="also write all result lines to this file")
    p.add_argument(
        "--fork-server",
        choices=("on", "off"),
        default="on",
        help="the Flow's processes forked from its fork server (the default) or started fresh",
    )
    args = p.parse_args()

    vers = _load.versions("meshflow", "grpcio", "protobuf", "numpy")
    tmpdir = tempfile.mkdtemp(prefix="meshflow-wire-bench-")
    results: list[dict[str, Any]] = []
    try:
        payloads = {
            (name, layout): payload(n, dim, layout) for name, n, dim in CASES for layout in LAYOUTS
        }
        paths = {key: write(tmpdir, "-".join(key), data) for key, data in payloads.items()}
        for rnd in range(1, args.repeat + 1):  # rounds outside, so interference spreads out
            results += run_ceiling(args, payloads, tmpdir, rnd)
            for setup in args.setups:
                results += run_setup(args, setup, paths, rnd)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    rows = table(results)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            for line in [*results, *rows]:
                fh.write(json.dumps(line) + "\n")
    print()
    print(
        f"meshflow {vers['meshflow']}, grpcio {vers['grpcio']}, protobuf {vers['protobuf']}, "
        f"Python {vers['python']}, {os.cpu_count()} CPUs; median of {args.repeat} rounds of "
        f"{args.duration:g} s (after {args.warmup:g} s warm-up); payload bytes: "
        + ", ".join(f"{n}/{layout} {len(d):,}" for (n, layout), d in payloads.items())
    )
    print(
        "| setup | case | layout | conc | docs/s | share of ceiling | p50 ms | srv CPU ms/req "
        "| ceiling's srv CPU / this | docs/s per round | foreign CPU % |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['setup']} | {r['case']} | {r['layout']} | {r['concurrency']} | "
            f"{r['docs_s']:,.0f} | {r['share_pct']:.1f}% | {r['p50_ms']:.1f} | {r['cpu']:.2f} | "
            f"{r['cpu_share_pct']:.0f}% | "
            f"{r['runs']} | {r['foreign']:.0f} |"
            + (f" errors: {r['errors']}" if r["errors"] else "")
        )


if __name__ == "__main__":
    main()
