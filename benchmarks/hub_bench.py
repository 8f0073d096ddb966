"""What the hub costs: the first build of an executor's environment, and the start-up time a
cached environment adds per executor.

    PYTHONPATH=. python benchmarks/hub_bench.py [--executors 4] [--rounds 3]

Everything happens in a temporary folder (hub, cache, uv's cache), offline: the executor is
scaffolded by ``meshflow hub new``, given one tiny pure-Python requirement (built here and
served from the same folder hub), built with uv and pushed.

- **first build**: ``ensure_environment`` with an empty uv cache (uv creates the venv,
  resolves against the hub, installs 2 wheels), then again in a new environment folder with
  uv's cache warm (what another Python or a changed requirement costs);
- **start-up overhead per executor**: a Flow (``mesh='direct'``) of N deployments of the
  same class, started from the hub (cached environments) and from the Flow's own
  environment (the project on ``sys.path``); (hub - plain) / N, median of the rounds. It
  includes resolution (reading the index), the runtime layer, and the executor process on the
  environment's interpreter. Target: under 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from meshflow import Document, Flow
from meshflow.hub.environment import ensure_environment
from meshflow.hub.index import FolderHub
from meshflow.hub.prepare import prepare
from meshflow.hub.project import build, new_project
from meshflow.hub.reference import HubRef
from meshflow.hub.resolve import resolve


def library(root: str) -> str:
    folder = os.path.join(root, "benchlib")
    os.makedirs(os.path.join(folder, "benchlib"))
    with open(os.path.join(folder, "pyproject.toml"), "w") as fh:
        fh.write(
            '[build-system]\nrequires = ["setuptools>=68"]\n'
            'build-backend = "setuptools.build_meta"\n'
            '[project]\nname = "benchlib"\nversion = "1.0.0"\n'
            '[tool.setuptools]\npackages = ["benchlib"]\n'
        )
    with open(os.path.join(folder, "benchlib", "__init__.py"), "w") as fh:
        fh.write('VERSION = "1.0.0"\n')
    return build(folder, os.path.join(root, "wheels"), executor=False)


def timed_start(flow: Flow) -> float:
    started = time.perf_counter()
    with flow:
        elapsed = time.perf_counter() - started
        flow.post("/", inputs=[Document(text="x")])
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as root:
        hub = FolderHub(os.path.join(root, "hub"))
        cache = os.path.join(root, "cache")
        os.environ.update(
            MESHFLOW_HUB=hub.location,
            MESHFLOW_HUB_CACHE=cache,
            UV_CACHE_DIR=os.path.join(root, "uv"),
            UV_DEFAULT_INDEX=hub.index_url,
        )
        hub.add(library(root))
        project = new_project("bench-echo", root)
        pyproject = os.path.join(project, "pyproject.toml")
        with open(pyproject) as fh:
            text = fh.read().replace("dependencies = []", 'dependencies = ["benchlib==1.0.0"]')
        with open(pyproject, "w") as fh:
            fh.write(text)
        hub.push(build(project, os.path.join(root, "wheels")))
        resolved = resolve(HubRef.parse("hub://bench-echo@0.1.0"), hub, cache)

        quiet = lambda _line: None  # noqa: E731
        started = time.perf_counter()
        env = ensure_environment(resolved, hub, cache, quiet)
        cold = time.perf_counter() - started
        other_cache = os.path.join(root, "cache2")
        started = time.perf_counter()
        ensure_environment(resolved, hub, other_cache, quiet)
        warm = time.perf_counter() - started
        started = time.perf_counter()
        refs = {f"e{i}": "hub://bench-echo@0.1.0" for i in range(args.executors)}
        prepare(refs, progress=quiet)
        prepared = time.perf_counter() - started
        print(f"first build (empty uv cache):      {cold:6.2f} s  ({env.short_key})")
        print(f"build again (uv cache warm):       {warm:6.2f} s")
        print(f"prepare {args.executors} cached deployments:       {prepared:6.3f} s")

        sys.path.insert(0, project)  # the same class in the Flow's own environment
        hub_times, plain_times = [], []
        for _ in range(args.rounds):
            f = Flow(mesh="direct", workspace=os.path.join(root, "ws"))
            p = Flow(mesh="direct", workspace=os.path.join(root, "ws"))
            for i in range(args.executors):
                f = f.add(name=f"e{i}", uses="hub://bench-echo@0.1.0")
                p = p.add(name=f"e{i}", uses="bench_echo.executor:BenchEcho")
            hub_times.append(timed_start(f))
            plain_times.append(timed_start(p))
        hub_start, plain_start = statistics.median(hub_times), statistics.median(plain_times)
        per = (hub_start - plain_start) / args.executors
        print(
            f"Flow start, {args.executors} executors:  hub {hub_start:.2f} s, "
            f"plain {plain_start:.2f} s (median of {args.rounds})"
        )
        verdict = "under" if per < 0.5 else "OVER"
        print(f"cached environment overhead:       {per:+.3f} s per executor ({verdict} 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
