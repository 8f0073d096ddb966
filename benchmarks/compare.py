"""One run, three contenders on the same load: meshflow, Jina 3.x and a raw grpc.aio echo.

Runs ``raw_echo.py`` and ``flow_bench.py`` with this interpreter, ``run_jina_flow.sh`` (Jina
in its own venv, in a loopback-only network namespace), one after the other, then prints the
figures side by side with meshflow's targets::

    .venv/bin/python benchmarks/compare.py [--duration 5] [--repeat 3]
    .venv/bin/python benchmarks/compare.py --also-python /tmp/venv-grpc185/bin/python

``--also-python`` runs ``flow_bench.py`` and ``raw_echo.py`` once more with another
interpreter (another grpcio), to choose the version by measurement.

``--http`` adds the HTTP doors: ``http_bench.py`` (meshflow's GraphQL, both meshes, and the
search answer with and without embeddings) and ``run_jina_flow.sh --protocol http`` (Jina's
REST door, loaded by the same client run with this interpreter inside Jina's network
namespace); ``--http-only`` runs just those. ``--http-client raw`` loads both sides with
plain asyncio streams instead of httpx (a fifth of httpx's CPU per request, so on a small
machine more of it goes to the servers being compared)::

    .venv/bin/python benchmarks/compare.py --http-only [--http-client raw]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [("1-doc", 1), ("1-doc", 32), ("64-doc-512d", 1), ("64-doc-512d", 32)]


def run(label: str, cmd: list[str], out: str) -> dict[str, Any]:
    print(f"== {label}: {' '.join(cmd)}", flush=True)
    subprocess.run([*cmd, "--json-out", out], check=True, stdout=subprocess.DEVNULL)
    with open(out, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    medians = {(r["case"], r["concurrency"]): r for r in rows if r.get("aggregate") == "median"}
    summary = next(r for r in rows if r.get("summary"))
    return {"label": label, "medians": medians, "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--also-python", action="append", default=[])
    p.add_argument("--skip-jina", action="store_true")
    p.add_argument("--http", action="store_true", help="also compare the HTTP doors")
    p.add_argument("--http-only", action="store_true", help="only the HTTP doors")
    p.add_argument("--json-dir", help="keep every contender's JSON lines in this folder")
    p.add_argument(
        "--http-client",
        choices=["httpx", "raw"],
        default="httpx",
        help="the HTTP load client of both sides (httpx, or raw asyncio streams)",
    )
    args = p.parse_args()
    args.http = args.http or args.http_only
    common = [
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--repeat",
        str(args.repeat),
        "--quiet-wait",
        str(args.quiet_wait),
    ]
    with tempfile.TemporaryDirectory(prefix="meshflow-compare-") as tmp:
        if args.json_dir:
            os.makedirs(args.json_dir, exist_ok=True)
            tmp = args.json_dir
        results = [] if args.http_only else collect(args, common, tmp)
        http = collect_http(args, common, tmp) if args.http else None
    if results:
        report(args, results)
    if http is not None:
        report_http(args, http)


def collect(args: argparse.Namespace, common: list[str], tmp: str) -> list[dict[str, Any]]:
    results = []
    pythons = [sys.executable, *args.also_python]
    for i, python in enumerate(pythons):
        tag = "" if i == 0 else f" [{python}]"
        for mesh in ("direct", "envoy"):
            results.append(
                run(
                    f"meshflow {mesh}" + tag,
                    [python, os.path.join(HERE, "flow_bench.py"), "--mesh", mesh, *common],
                    os.path.join(tmp, f"meshflow-{mesh}{i}.jsonl"),
                )
            )
        results.append(
            run(
                "raw echo" + tag,
                [python, os.path.join(HERE, "raw_echo.py"), *common],
                os.path.join(tmp, f"raw{i}.jsonl"),
            )
        )
    if not args.skip_jina:
        results.append(
            run(
                "jina",
                ["bash", os.path.join(HERE, "run_jina_flow.sh"), *common],
                os.path.join(tmp, "jina.jsonl"),
            )
        )
    return results


def collect_http(args: argparse.Namespace, common: list[str], tmp: str) -> dict[str, Any]:
    """meshflow's GraphQL door (both meshes, one run) and, unless skipped, Jina's REST door."""
    out: dict[str, Any] = {}
    path = os.path.join(tmp, "meshflow-http.jsonl")
    client = ["--http-client", args.http_client]
    cmd = [sys.executable, os.path.join(HERE, "http_bench.py"), *common, *client]
    print(f"== meshflow http: {' '.join(cmd)}", flush=True)
    subprocess.run([*cmd, "--json-out", path], check=True, stdout=subprocess.DEVNULL)
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    for mesh in MESHES:
        out[mesh] = {
            "medians": {
                (r["case"], r["concurrency"]): r
                for r in rows
                if r.get("aggregate") == "median" and r["mesh"] == mesh
            },
            "summary": next(r for r in rows if r.get("summary") and r["mesh"] == mesh),
        }
    if not args.skip_jina:
        jina_cmd = ["bash", os.path.join(HERE, "run_jina_flow.sh"), "--protocol", "http"]
        out["jina"] = run(
            "jina http",
            [*jina_cmd, "--client-python", sys.executable, *common, *client],
            os.path.join(tmp, "jina-http.jsonl"),
        )
    return out


HTTP_CONCURRENCIES = (1, 32)
HTTP_TARGET = 1.5


def report_http(args: argparse.Namespace, http: dict[str, Any]) -> None:
    from _http_load import group_cpu

    jina = http.get("jina")
    print()
    print(
        f"HTTP doors, 1 doc per request ({args.http_client} client, keep-alive, one connection "
        f"per worker); "
        f"median of {args.repeat} rounds of {args.duration:g} s"
    )
    print(f"{'':34}" + "".join(f"c={n:<3}".rjust(28) for n in HTTP_CONCURRENCIES))
    lines = [(f"meshflow {m} GraphQL", http[m]["medians"], "graphql 1-doc") for m in MESHES]
    if jina is not None:
        lines.append(("Jina HTTP (POST /default)", jina["medians"], "post 1-doc"))
    for label, medians, case in lines:
        cells = []
        for n in HTTP_CONCURRENCIES:
            m = medians[(case, n)]
            cell = f"{m['rps']:>7,.0f} r/s {m['p50_ms']:>6.2f} ms"
            cells.append(f"{cell} {m['server_cpu_ms_per_req']:>5.2f}".rjust(28))
        print(f"{label:34}" + "".join(cells))
    print(f"{'':34}{'(req/s, p50, server CPU ms per request)':>56}")
    print("\nserver CPU per request by role, ms (median):")
    for label, medians, case in lines:
        for n in HTTP_CONCURRENCIES:
            m = medians[(case, n)]
            roles = group_cpu(m["cpu_ms_per_req_by_process"])
            parts = ", ".join(f"{k} {v:.2f}" for k, v in roles.items())
            print(f"  {label:32} c={n:<3} {parts}, client {m['client_cpu_ms_per_req']:.2f}")
    for mesh in MESHES:
        med = http[mesh]["medians"]
        lean = med.get(("search ids+scores", 8))
        full = med.get(("search +embeddings", 8))
        if lean is None or full is None:
            continue
        print(f"\nsearch answer, meshflow {mesh} GraphQL, 10 docs x 50 matches (512-d), c=8:")
        for label, m in (
            ("docs { id matches { id scores } }", lean),
            ("docs { id matches { id scores embedding { data } } }", full),
        ):
            roles = group_cpu(m["cpu_ms_per_req_by_process"])
            print(
                f"  {label:52} {m['rps']:>7,.1f} req/s, p50 {m['p50_ms']:>7,.0f} ms, "
                f"{m['response_bytes']:>9,} B; server CPU ms/req "
                + ", ".join(f"{k} {v:,.1f}" for k, v in roles.items())
            )
    if jina is None:
        return
    print("\ntargets (against Jina's HTTP door in this run):")
    for mesh in MESHES:
        ratio = (
            http[mesh]["medians"][("graphql 1-doc", 32)]["rps"]
            / jina["medians"][("post 1-doc", 32)]["rps"]
        )
        verdict = "met" if ratio >= HTTP_TARGET else "MISSED"
        print(
            f"  {mesh}: GraphQL 1-doc c=32 req/s >= {HTTP_TARGET}x Jina HTTP "
            f"{ratio:5.2f}x  {verdict}"
        )


MESHES = ("direct", "envoy", "envoy-host")  # envoy-host: envoy_proxy="host"


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    jina = next((r for r in results if r["label"] == "jina"), None)

    print()
    print(f"median of {args.repeat} rounds of {args.duration:g} s, 2 cores = {os.cpu_count()}")
    header = f"{'':34}" + "".join(f"{c} c={n:<3}".rjust(22) for c, n in CASES)
    print(header)
    for res in results:
        versions = res["summary"]["versions"]
        name = f"{res['label'].split(' [')[0]} (grpcio {versions.get('grpcio')})"
        cells = []
        for key in CASES:
            m = res["medians"][key]
            cells.append(f"{m['rps']:>7,.0f} r/s {m['p50_ms']:>6.2f} ms".rjust(22))
        print(f"{name:34}" + "".join(cells))
    print()
    for res in results:
        s = res["summary"]
        rss = s.get("peak_rss_sum_mb") or s.get("flow_peak_rss_sum_mb")
        pss = s.get("pss_sum_mb") or s.get("flow_pss_sum_mb")
        print(
            f"{res['label']:34} start-up {s['startup_s']:.2f} s, "
            f"peak RSS sum {rss} MB, PSS {pss} MB"
        )
    if jina is None:
        return
    print("\ntargets (meshflow, first interpreter, against Jina in this run):")
    direct, envoy = results[0], results[1]
    checks = [
        (direct, "direct: 1-doc c=32 req/s >= 1.5x Jina", "rps", ("1-doc", 32), 1.5, True),
        (direct, "direct: 64-doc c=32 docs/s >= 3x Jina", "docs_s", ("64-doc-512d", 32), 3.0, True),
        (direct, "direct: 1-doc c=1 p50 <= 0.6x Jina", "p50_ms", ("1-doc", 1), 0.6, False),
        (envoy, "envoy: 1-doc c=32 req/s >= 1.2x Jina", "rps", ("1-doc", 32), 1.2, True),
        (envoy, "envoy: 64-doc c=32 docs/s >= 2.5x Jina", "docs_s", ("64-doc-512d", 32), 2.5, True),
    ]
    for res, label, key, case, factor, higher in checks:
        ratio = res["medians"][case][key] / jina["medians"][case][key]
        ok = ratio >= factor if higher else ratio <= factor
        print(f"  {label:40} {ratio:5.2f}x  {'met' if ok else 'MISSED'}")
    js = jina["summary"]
    for res in (direct, envoy):
        ms = res["summary"]
        for label, mine, theirs in (
            ("start-up <= Jina", ms["startup_s"], js["startup_s"]),
            ("summed peak RSS <= Jina", ms["peak_rss_sum_mb"], js["flow_peak_rss_sum_mb"]),
        ):
            verdict = "met" if mine <= theirs else "MISSED"
            print(f"  {ms['mesh']}: {label:32} {mine / theirs:5.2f}x  {verdict}")
    print(f"  envoy: start-up < 1.5 s{'':17} {envoy['summary']['startup_s']:.2f} s")
    print("\nsidecar cost (envoy vs direct, server CPU ms per request):")
    for case in CASES:
        d = direct["medians"][case]["server_cpu_ms_per_req"]
        e = envoy["medians"][case]["server_cpu_ms_per_req"]
        print(f"  {case[0]} c={case[1]:<3} direct {d:.3f}  envoy {e:.3f}  (+{e - d:.3f})")


if __name__ == "__main__":
    main()
