"""The gateway's cost of a search answer, for one or more source trees side by side.

For each ``--tree NAME=PATH`` a server process runs with ``PYTHONPATH=PATH`` (so the Flow's
gateway and executors import that tree's meshflow) and starts, on the direct mesh:

* the search Flow ``Flow().add(uses=Noop).add(uses=Searcher)``: 10 query documents per
  request, each answered with 50 matches carrying a 512-d float32 embedding and a score;
* the echo Flow ``Flow().add(uses=Noop).add(uses=Noop)`` for the 1-doc GraphQL ``post``.

Cases (GraphQL mutations on ``flow.graphql_url``):

* ``ids+scores``: ``docs { id matches { id scores } }`` at c=8;
* ``+embeddings``: ``docs { id matches { id scores embedding { data } } }`` at c=8;
* ``1-doc post``: ``post(on: "/", docs: [1 doc]) { docs { id text } }`` at c=32.

Every tree's answer to each case must be byte-for-byte the same JSON as the first tree's
(apart from nothing: ids are fixed) before any load runs. Then rounds alternate the trees
case by case, so that both see the same machine; the load comes from a separate client
process (``_http_load.py``). The metric is the **gateway's CPU time per request** (utime +
stime of its process over the round, from ``/proc``): it stays honest when other work
shares the cores, where requests/s does not::

    .venv/bin/python benchmarks/answer_bench.py --tree base=/work/wt-base --tree fast=. \\
        [--duration 5] [--warmup 1] [--repeat 3] [--case ids+scores ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _http_load  # noqa: E402
import _load  # noqa: E402

N_QUERIES, N_MATCHES, DIM = 10, 50, 512

POST = 'mutation($docs: [DocumentInput!]) { post(on: "/", docs: $docs) { docs { id text } } }'
SEARCH = 'mutation($docs: [DocumentInput!]) { post(on: "/search", docs: $docs) { docs { %s } } }'
CASES: dict[str, tuple[str, str, int]] = {  # name -> (flow, query, concurrency)
    "ids+scores": ("search", SEARCH % "id matches { id scores }", 8),
    "+embeddings": ("search", SEARCH % "id matches { id scores embedding { data } }", 8),
    "1-doc post": ("echo", POST, 32),
}


def search_docs() -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "text": f"query {i}"} for i in range(N_QUERIES)]


def body_of(case: str) -> bytes:
    flow, query, _ = CASES[case]
    docs = search_docs() if flow == "search" else [{"id": "d0", "text": "hello world"}]
    return json.dumps({"query": query, "variables": {"docs": docs}}).encode()


# -- the server process (runs with PYTHONPATH set to one tree) ---------------------------------


def serve(workspace: str) -> None:
    """Start both Flows, print their URLs and pids as one JSON line, wait for stdin to close."""
    import numpy as np

    from meshflow import Document, DocumentArray, Executor, Flow, requests

    class Noop(Executor):
        @requests
        async def noop(self, docs: DocumentArray, **kwargs: Any) -> None:
            for _ in docs:
                pass

    class Searcher(Executor):
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

    search = Flow(name="answer-search", workspace=workspace, mesh="direct")
    search = search.add(uses=Noop).add(uses=Searcher)
    echo = (
        Flow(name="answer-echo", workspace=workspace, mesh="direct").add(uses=Noop).add(uses=Noop)
    )
    started = []
    try:
        for f in (search, echo):
            f.start()
            started.append(f)
        import meshflow

        print(
            json.dumps(
                {
                    "meshflow": os.path.dirname(os.path.dirname(meshflow.__file__)),
                    "search": {"url": search.graphql_url, "pids": search.pids},
                    "echo": {"url": echo.graphql_url, "pids": echo.pids},
                }
            ),
            flush=True,
        )
        sys.stdin.read()  # until the orchestrator closes it (or dies)
    finally:
        for f in reversed(started):
            f.close()


# -- the orchestrator ------------------------------------------------------------------------


class Server:
    """One tree's server process and what it printed."""

    def __init__(self, name: str, tree: str, workspace: str) -> None:
        self.name, self.tree = name, os.path.abspath(tree)
        env = {**os.environ, "PYTHONPATH": self.tree}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", workspace],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.tree,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"the server of tree {name!r} ({tree}) did not start")
        self.info: dict[str, Any] = json.loads(line)
        if os.path.realpath(self.info["meshflow"]) != os.path.realpath(self.tree):
            self.close()
            raise RuntimeError(f"tree {name!r} imported meshflow from {self.info['meshflow']}")

    def url(self, case: str) -> str:
        return str(self.info[CASES[case][0]]["url"])

    def pids(self, case: str) -> dict[str, int]:
        return dict(self.info[CASES[case][0]]["pids"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=10)


def fetch(url: str, body: bytes) -> bytes:
    import httpx

    r = httpx.post(
        url,
        content=body,
        headers={"content-type": "application/json", "accept": "application/json"},
        timeout=60,
    )
    if r.status_code != 200 or b'"errors"' in r.content:
        raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:500]}")
    return r.content


def check_same(servers: list[Server], cases: list[str]) -> dict[str, int]:
    """Every tree answers every case with the same JSON (parsed: key order and spacing may
    differ between encoders); returns each case's answer size from the first tree."""
    sizes = {}
    for case in cases:
        answers = [fetch(s.url(case), body_of(case)) for s in servers]
        first = json.loads(answers[0])
        for s, a in zip(servers[1:], answers[1:], strict=True):
            if json.loads(a) != first:
                raise RuntimeError(
                    f"{s.name!r} answers {case!r} differently from {servers[0].name!r}"
                )
        if CASES[case][0] == "search":
            docs = first["data"]["post"]["docs"]
            assert len(docs) == N_QUERIES and all(len(d["matches"]) == N_MATCHES for d in docs)
        sizes[case] = len(answers[0])
    return sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", metavar="WORKSPACE", help=argparse.SUPPRESS)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--case", action="append", choices=list(CASES), help="default: all")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians")
    p.add_argument("--json-out", help="also write every result row to this file")
    args = p.parse_args()
    if args.serve:
        serve(args.serve)
        return
    trees = [t.partition("=") for t in args.tree] or [("this", "=", os.path.dirname(HERE))]
    cases = args.case or list(CASES)
    vers = _load.versions("httpx", "uvicorn", "strawberry-graphql", "graphql-core", "orjson")
    with tempfile.TemporaryDirectory(prefix="meshflow-answer-bench-") as tmp:
        servers: list[Server] = []
        rows: list[dict[str, Any]] = []
        try:
            for name, _, tree in trees:
                workspace = os.path.join(tmp, name)
                os.makedirs(workspace)
                servers.append(Server(name, tree, workspace))
            sizes = check_same(servers, cases)
            paths = {}
            for case in cases:
                paths[case] = os.path.join(tmp, f"{len(paths)}.json")
                with open(paths[case], "wb") as fh:
                    fh.write(body_of(case))
            for rnd in range(args.repeat):
                for case in cases:
                    for s in servers:
                        row = _http_load.measure_http_case(
                            bench="answer",
                            case=case,
                            docs_per_req=N_QUERIES if CASES[case][0] == "search" else 1,
                            url=s.url(case),
                            body_path=paths[case],
                            concurrency=CASES[case][2],
                            duration=args.duration,
                            warmup=args.warmup,
                            server_pids=s.pids(case),
                            extra={"round": rnd + 1, "tree": s.name},
                        )
                        g = _http_load.group_cpu(row["cpu_ms_per_req_by_process"])
                        row["gateway_cpu_ms_per_req"] = g["gateway"]
                        row["executors_cpu_ms_per_req"] = g["executors"]
                        rows.append(row)
                        print(
                            f"round {rnd + 1} {case:12} {s.name:6} {row['rps']:8.1f} req/s  "
                            f"gateway {g['gateway']:8.2f} ms/req  foreign {row['foreign_pct']}%",
                            flush=True,
                        )
        finally:
            for s in servers:
                s.close()
    if args.json_out:
        with open(args.json_out, "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    report(args, servers, cases, sizes, rows, vers)


def report(
    args: argparse.Namespace,
    servers: list[Server],
    cases: list[str],
    sizes: dict[str, int],
    rows: list[dict[str, Any]],
    vers: dict[str, str],
) -> None:
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        + ", ".join(f"{k} {v}" for k, v in vers.items())
        + f"; median of {args.repeat} rounds of {args.duration:g} s (+{args.warmup:g} s warm-up)"
    )
    base = servers[0].name
    print(
        f"{'case':12} {'conc':>4} {'answer B':>10} {'tree':8} {'req/s':>8} {'p50 ms':>8} "
        f"{'gateway CPU ms/req':>18} {'vs ' + base:>8} {'foreign %':>9}"
    )
    for case in cases:
        first = None
        for s in servers:
            mine = [r for r in rows if r["case"] == case and r["tree"] == s.name]
            gw = statistics.median(r["gateway_cpu_ms_per_req"] for r in mine)
            rps = statistics.median(r["rps"] for r in mine)
            p50 = statistics.median(r["p50_ms"] for r in mine)
            foreign = max(r["foreign_pct"] for r in mine)
            first = gw if first is None else first
            print(
                f"{case:12} {CASES[case][2]:4d} {sizes[case]:10,d} {s.name:8} {rps:8.1f} "
                f"{p50:8.1f} {gw:18.2f} {first / gw:7.2f}x {foreign:9.1f}"
            )
    print(f"\n{base} / tree, gateway CPU per request, round by round (each round loads both):")
    for case in cases:
        for s in servers[1:]:
            ratios = [
                _gateway_ms(rows, case, base, rnd) / _gateway_ms(rows, case, s.name, rnd)
                for rnd in range(1, args.repeat + 1)
            ]
            print(
                f"{case:12} {s.name:8} "
                + " ".join(f"{r:5.2f}" for r in ratios)
                + f"   median {statistics.median(ratios):.2f}, min {min(ratios):.2f}"
            )


def _gateway_ms(rows: list[dict[str, Any]], case: str, tree: str, rnd: int) -> float:
    [row] = [r for r in rows if (r["case"], r["tree"], r["round"]) == (case, tree, rnd)]
    return float(row["gateway_cpu_ms_per_req"])


if __name__ == "__main__":
    main()
