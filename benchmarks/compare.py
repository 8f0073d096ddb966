"""One run, three contenders on the same load: meshflow, Jina 3.x and a raw grpc.aio echo.

Runs ``raw_echo.py`` and ``flow_bench.py`` with this interpreter, ``run_jina_flow.sh`` (Jina
in its own venv, in a loopback-only network namespace), one after the other, then prints the
figures side by side with meshflow's targets::

    .venv/bin/python benchmarks/compare.py [--duration 5] [--repeat 3]
    .venv/bin/python benchmarks/compare.py --also-python /tmp/venv-grpc185/bin/python

``--also-python`` runs ``flow_bench.py`` and ``raw_echo.py`` once more with another
interpreter (another grpcio), to choose the version by measurement.
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
    args = p.parse_args()
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
        results = collect(args, common, tmp)
    report(args, results)


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
