"""meshflow's HTTP door: GraphQL on the seed Flow shape, and a search answer with pushdown.

For each mesh (``direct``, ``envoy``, and ``envoy-host``: the Envoy mesh with one Envoy for
the Flow, ``envoy_proxy='host'``), started in this process:

* ``Flow(mesh=M).add(uses=Noop).add(uses=Noop)``, loaded through ``flow.graphql_url`` with
  the mutation ``post(on: "/", docs: $docs) { docs { id text } }`` carrying 1 document
  (``{"text": "hello world"}``), at concurrency 1 and 32 (``--rest`` adds the same request on
  meshflow's plain ``POST /post``);
* the search answer: ``Flow(mesh=M).add(uses=Noop).add(uses=Searcher)``, 10 query documents
  per request, each answered with 50 matches carrying a 512-d float32 embedding and a score;
  at concurrency 8, one query selects ``docs { id matches { id scores } }``, the other also
  ``embedding { data }``. The executors drop every field no query selects before replying
  (selection pushdown), so the first query never moves the 1 MB of embeddings.

The load comes from a separate process (``_http_load.py``: httpx ``AsyncClient``, or with
``--http-client raw`` plain asyncio streams; HTTP/1.1 keep-alive, one connection per
concurrent worker). Reports requests/s, p50/p99, response size and the server CPU per
request, summed over the Flow's processes and per process::

    .venv/bin/python benchmarks/http_bench.py [--mesh direct envoy] [--duration 5] [--repeat 3]
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

import _http_load  # noqa: E402
import _load  # noqa: E402
import numpy as np  # noqa: E402

from meshflow import Document, DocumentArray, Executor, Flow, requests  # noqa: E402

CONCURRENCIES = [1, 32]
SEARCH_CONCURRENCY = 8
N_QUERIES, N_MATCHES, DIM = 10, 50, 512

POST = 'mutation($docs: [DocumentInput!]) { post(on: "/", docs: $docs) { docs { id text } } }'
SEARCH = 'mutation($docs: [DocumentInput!]) { post(on: "/search", docs: $docs) { docs { %s } } }'
SEARCH_SELECTIONS = {  # case name -> what the query selects under docs
    "search ids+scores": "id matches { id scores }",
    "search +embeddings": "id matches { id scores embedding { data } }",
}


class Noop(Executor):
    """Looks at every document and changes nothing: the framework's own cost."""

    @requests
    async def noop(self, docs: DocumentArray, **kwargs: Any) -> None:
        for _ in docs:
            pass


class Searcher(Executor):
    """On '/search', gives each query document 50 matches (512-d float32 embedding, score)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        rng = np.random.default_rng(0)
        self.embeddings = rng.random((N_MATCHES, DIM), dtype=np.float32)

    @requests(on="/search")
    async def search(self, docs: DocumentArray, **kwargs: Any) -> None:
        for q in docs:
            q.matches = DocumentArray(
                Document(
                    id=f"{q.id}-{j}",
                    embedding=self.embeddings[j],
                    scores={"cosine": 1.0 - j / N_MATCHES},
                )
                for j in range(N_MATCHES)
            )

    @requests
    async def other(self, docs: DocumentArray, **kwargs: Any) -> None:
        pass


def graphql_body(query: str, docs: list[dict[str, Any]]) -> bytes:
    return json.dumps({"query": query, "variables": {"docs": docs}}).encode()


def check(url: str, body: bytes) -> dict[str, Any]:
    """POST once and return the parsed answer; raise unless it is a 200 without errors."""
    import httpx

    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    answer: dict[str, Any] = r.json()
    if r.status_code != 200 or "errors" in answer:
        raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:500]}")
    return answer


def search_docs() -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "text": f"query {i}"} for i in range(N_QUERIES)]


def validate_search(answer: dict[str, Any], with_embeddings: bool) -> None:
    docs = answer["data"]["post"]["docs"]
    assert [d["id"] for d in docs] == [f"q{i}" for i in range(N_QUERIES)], docs
    for d in docs:
        assert len(d["matches"]) == N_MATCHES
        m = d["matches"][0]
        assert m["scores"] == {"cosine": 1.0}, m
        if with_embeddings:
            assert len(m["embedding"]["data"]) == DIM
        else:
            assert set(m) == {"id", "scores"}, m


MESHES = ["direct", "envoy", "envoy-host"]


def mesh_options(mesh: str) -> dict[str, Any]:
    """The Flow options of a mesh name of this script."""
    if mesh == "envoy-host":
        return {"mesh": "envoy", "envoy_proxy": "host"}
    return {"mesh": mesh}


def bench_mesh(args: argparse.Namespace, mesh: str, tmpdir: str) -> dict[str, Any]:
    """Both Flows of one mesh, every case, ``args.repeat`` rounds (rounds outermost)."""
    cases: list[dict[str, Any]] = []  # name, flow, url, body path, concurrencies, docs, reject
    t0 = time.perf_counter()
    options = mesh_options(mesh)
    echo = Flow(name="http-bench", workspace=tmpdir, **options).add(uses=Noop).add(uses=Noop)
    search = None
    if not args.skip_search:
        search = (
            Flow(name="search-bench", workspace=tmpdir, **options).add(uses=Noop).add(uses=Searcher)
        )
    flows = [f for f in (echo, search) if f is not None]
    started: list[Flow] = []
    results: list[dict[str, Any]] = []
    startup: dict[str, float] = {}
    try:
        for f in flows:
            t = time.perf_counter()
            f.start()
            started.append(f)
            startup[f.name] = round(time.perf_counter() - t, 3)
        one_doc = [{"text": "hello world"}]
        path = os.path.join(tmpdir, f"{mesh}-graphql-1.json")
        body = graphql_body(POST, one_doc)
        with open(path, "wb") as fh:
            fh.write(body)
        docs = check(echo.graphql_url, body)["data"]["post"]["docs"]
        assert len(docs) == 1 and docs[0]["text"] == "hello world", docs
        cases.append(dict(name="graphql 1-doc", flow=echo, url=echo.graphql_url, path=path))
        if args.rest:
            url = echo.graphql_url.rsplit("/", 1)[0] + "/post"
            body = json.dumps({"on": "/", "docs": one_doc}).encode()
            path = os.path.join(tmpdir, f"{mesh}-rest-1.json")
            with open(path, "wb") as fh:
                fh.write(body)
            docs = check(url, body)["docs"]
            assert len(docs) == 1 and docs[0]["text"] == "hello world", docs
            cases.append(dict(name="rest 1-doc", flow=echo, url=url, path=path))
        for c in cases:
            c.update(concurrencies=args.concurrency, docs=1)
        if search is not None:
            for name, selection in SEARCH_SELECTIONS.items():
                body = graphql_body(SEARCH % selection, search_docs())
                path = os.path.join(tmpdir, f"{mesh}-{name.split()[-1]}.json")
                with open(path, "wb") as fh:
                    fh.write(body)
                validate_search(check(search.graphql_url, body), "embedding" in selection)
                cases.append(
                    dict(
                        name=name,
                        flow=search,
                        url=search.graphql_url,
                        path=path,
                        concurrencies=[args.search_concurrency],
                        docs=N_QUERIES,
                    )
                )
        vers = _load.versions("meshflow", "httpx", "uvicorn", "strawberry-graphql", "grpcio")
        for rnd in range(args.repeat):
            for c in cases:
                for conc in c["concurrencies"]:
                    row = _http_load.measure_http_case(
                        bench=f"meshflow-{mesh}-http",
                        case=c["name"],
                        docs_per_req=c["docs"],
                        url=c["url"],
                        body_path=c["path"],
                        concurrency=conc,
                        duration=args.duration,
                        warmup=args.warmup,
                        server_pids=c["flow"].pids,
                        quiet_wait=args.quiet_wait,
                        client=args.http_client,
                        extra={"round": rnd + 1, "mesh": mesh, "http_client": args.http_client},
                    )
                    results.append(row)
                    print(json.dumps(row), flush=True)
        mem = _load.memory_report(echo.pids.values())
        processes = {f.name: sorted(f.pids) for f in started}
    finally:
        for f in reversed(started):
            f.close()
    agg = _http_load.aggregate(results)
    for a in agg:
        print(json.dumps(a), flush=True)
    summary = {
        "bench": f"meshflow-{mesh}-http",
        "mesh": mesh,
        "summary": True,
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "versions": vers,
        "startup_s": startup,
        "processes": processes,
        "peak_rss_sum_mb": mem["peak_rss_sum_mb"],
        "pss_sum_mb": mem["pss_sum_mb"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary), flush=True)
    return {"mesh": mesh, "results": results, "agg": agg, "summary": summary}


def print_report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    vers = runs[0]["summary"]["versions"]
    print()
    print(
        f"meshflow {vers['meshflow']}, uvicorn {vers['uvicorn']}, strawberry "
        f"{vers['strawberry-graphql']}, client "
        + (f"httpx {vers['httpx']}" if args.http_client == "httpx" else "raw asyncio streams")
        + f", Python {vers['python']}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"median of {args.repeat} rounds of {args.duration:g} s (after {args.warmup:g} s "
        f"warm-up); srv CPU = all the Flow's processes per request; resp B = one answer"
    )
    for run in runs:
        s = run["summary"]
        print(
            f"\nmesh={run['mesh']!r}: start-up "
            + ", ".join(f"{k} {v:.2f} s" for k, v in s["startup_s"].items())
            + f"; 2-executor Flow peak RSS sum {s['peak_rss_sum_mb']} MB"
        )
        _load.print_table(run["agg"], _http_load.TABLE_COLUMNS)
    print("\nserver CPU per request by role, ms (median):")
    rows = []
    for run in runs:
        for a in run["agg"]:
            g = _http_load.group_cpu(a["cpu_ms_per_req_by_process"])
            rows.append(
                {
                    "mesh": run["mesh"],
                    "case": a["case"],
                    "concurrency": a["concurrency"],
                    **g,
                    "client": a["client_cpu_ms_per_req"],
                }
            )
    _load.print_table(
        rows,
        [
            ("mesh", "mesh"),
            ("case", "case"),
            ("concurrency", "conc"),
            ("gateway", "gateway"),
            ("executors", "executors"),
            ("sidecars", "sidecars"),
            ("client", "client"),
        ],
    )
    for run in runs:
        by_case = {a["case"]: a for a in run["agg"]}
        lean, full = (by_case.get(n) for n in SEARCH_SELECTIONS)
        if lean and full:
            print(
                f"\nsearch answer (mesh={run['mesh']!r}, {N_QUERIES} docs x {N_MATCHES} matches, "
                f"c={lean['concurrency']}): ids+scores {lean['rps']:,.1f} req/s, "
                f"{lean['response_bytes']:,} B; +embeddings {full['rps']:,.1f} req/s, "
                f"{full['response_bytes']:,} B ({lean['rps'] / max(full['rps'], 1e-9):.1f}x "
                f"the requests/s, {full['response_bytes'] / lean['response_bytes']:.0f}x the "
                "bytes)"
            )
    warn = _load.contamination_warning([r for run in runs for r in run["results"]])
    if warn:
        print(warn)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mesh", choices=MESHES, nargs="+", default=MESHES)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, nargs="+", default=CONCURRENCIES)
    p.add_argument("--search-concurrency", type=int, default=SEARCH_CONCURRENCY)
    p.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    p.add_argument("--quiet-wait", type=float, default=0.0, metavar="S")
    p.add_argument("--rest", action="store_true", help="also load meshflow's POST /post")
    p.add_argument("--skip-search", action="store_true", help="no search-answer cases")
    p.add_argument("--json-out", help="also write all result lines to this file")
    p.add_argument(
        "--http-client",
        choices=sorted(_http_load.CLIENTS),
        default="httpx",
        help="the HTTP load client (_http_load.py --client): httpx, or raw asyncio streams",
    )
    args = p.parse_args()

    tmpdir = tempfile.mkdtemp(prefix="meshflow-http-bench-")
    try:
        runs = [bench_mesh(args, mesh, tmpdir) for mesh in args.mesh]
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            for run in runs:
                for r in [*run["results"], *run["agg"], run["summary"]]:
                    fh.write(json.dumps(r) + "\n")
    print_report(args, runs)


if __name__ == "__main__":
    main()
