"""``meshflow hub``: make, publish, inspect and pin versioned executors.

``new NAME`` scaffolds a project; ``push DIR|WHEEL`` builds (a folder) and publishes a wheel;
``list`` and ``show NAME`` read the hub; ``pull NAME@VER`` fetches a wheel and builds its
environment; ``lock FLOW.yml`` pins every ``hub://`` reference of a Flow. ``--hub`` (default
``MESHFLOW_HUB``, else ``~/.meshflow/hub``) is a folder or a simple index URL. Bad input (an
unknown executor, a missing version, a wheel without metadata...) exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from typing import Any


def add_hub_parser(sub: Any) -> None:
    hub = sub.add_parser("hub", help="versioned executors in a package index (the hub)")
    what = hub.add_subparsers(dest="hub_command", required=True)

    def with_hub(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--hub", help="a folder or a simple index URL (default: $MESHFLOW_HUB, ~/.meshflow/hub)"
        )
        parser.add_argument(
            "--cache", help="where wheels and environments are kept (default: $MESHFLOW_HUB_CACHE)"
        )
        return parser

    new = what.add_parser("new", help="scaffold an executor project")
    new.add_argument("name", help="the project's name, e.g. image-encoder")
    new.add_argument("--dir", default=".", help="where to create it (default: here)")
    new.add_argument("--description", default="", help="one line about it")

    push = with_hub(what.add_parser("push", help="build a project (or take a wheel) and publish"))
    push.add_argument("path", help="a project folder or a .whl file")
    push.add_argument(
        "--library",
        action="store_true",
        help="publish a plain wheel (a requirement of executors), not an executor",
    )

    with_hub(what.add_parser("list", help="the executors of the hub and their versions"))

    show = with_hub(what.add_parser("show", help="an executor: versions, endpoints, requirements"))
    show.add_argument("ref", help="NAME, NAME@VERSION or NAME>=1.2,<2")
    show.add_argument(
        "--no-endpoints",
        action="store_true",
        help="do not build its environment to list endpoints",
    )
    show.add_argument("--json", action="store_true", help="print JSON")

    pull = with_hub(what.add_parser("pull", help="fetch a version and build its environment"))
    pull.add_argument("ref", help="NAME@VERSION (or a specifier)")
    pull.add_argument("--out", help="also copy the wheel into this folder")

    lock = with_hub(what.add_parser("lock", help="pin every hub:// reference of a Flow YAML"))
    lock.add_argument("config", help="path of the Flow YAML")


def _ref(text: str) -> Any:
    from meshflow.hub.reference import HubRef

    return HubRef.parse(text if text.startswith("hub://") else "hub://" + text)


def _hub(args: argparse.Namespace) -> tuple[Any, str]:
    from meshflow.hub.environment import default_cache_dir
    from meshflow.hub.index import open_hub

    cache = args.cache or default_cache_dir()
    os.makedirs(cache, exist_ok=True)
    return open_hub(args.hub), cache


def _hub_command(args: argparse.Namespace) -> int:
    """Run ``meshflow hub ...``; hub errors are ConfigErrors (exit status 2)."""
    command = args.hub_command
    if command == "new":
        from meshflow.hub.project import new_project

        root = new_project(args.name, args.dir, description=args.description)
        print(f"created {root}: edit its executor, then `meshflow hub push {root}`")
        return 0
    hub, cache = _hub(args)
    if command == "push":
        return _push(args, hub)
    if command == "list":
        return _list(hub, cache)
    if command == "show":
        return _show(args, hub, cache)
    if command == "pull":
        return _pull(args, hub, cache)
    from meshflow.hub.lock import write_lock

    path, content = write_lock(args.config, hub, cache)
    for text, pin in content["executors"].items():
        print(f"{text} -> {pin['name']} {pin['version']} ({pin['file']})")
    print(f"wrote {path}")
    return 0


def _push(args: argparse.Namespace, hub: Any) -> int:
    from meshflow.hub.project import build

    wheel = args.path
    if os.path.isdir(wheel):
        wheel = build(wheel, executor=not args.library)
        print(f"built {os.path.basename(wheel)}")
    elif not os.path.isfile(wheel):
        from meshflow.errors import ConfigError

        raise ConfigError(f"{args.path}: no such project folder or wheel")
    pushed = hub.add(wheel) if args.library else hub.push(wheel)
    print(f"pushed {pushed.project} {pushed.version} to {hub.location}")
    return 0


def _list(hub: Any, cache: str) -> int:
    from meshflow.hub.errors import MissingMetadataError
    from meshflow.hub.index import fetch
    from meshflow.hub.metadata import read_wheel

    projects = hub.projects()
    if not projects:
        print(f"the hub {hub.location} has no executors yet (`meshflow hub push PROJECT`)")
        return 0
    print(f"{'executor':<28} {'versions':<28} description")
    for project in projects:
        files = hub.files(project)
        if not files:
            continue
        try:
            meta = read_wheel(fetch(files[-1], cache))
        except MissingMetadataError:
            continue  # a library executors need, not an executor
        versions = ", ".join(sorted({str(f.version) for f in files}, reverse=True))
        print(f"{project:<28} {versions:<28} {meta.description}")
    return 0


def _show(args: argparse.Namespace, hub: Any, cache: str) -> int:
    from meshflow.hub.environment import ensure_environment
    from meshflow.hub.resolve import available, resolve

    ref = _ref(args.ref)
    resolved = resolve(ref, hub, cache)
    files, _ = available(ref, hub, cache)
    meta = resolved.metadata
    info: dict[str, Any] = {
        "name": meta.name,
        "version": meta.version,
        "versions": sorted({str(f.version) for f in files}, reverse=True),
        "description": meta.description,
        "executor": meta.executor,
        "wheel": resolved.file.filename,
        "sha256": resolved.sha256,
        "requirements": list(meta.requirements),
        "models": [{"path": m.path, "sha256": m.sha256} for m in meta.models],
    }
    if not args.no_endpoints:
        env = ensure_environment(resolved, hub, cache)
        info["environment"] = env.short_key
        info["endpoints"] = _endpoints(env.python, meta.executor, cache)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{meta.name} {meta.version}: {meta.description}")
    print(f"  versions:     {', '.join(info['versions'])}")
    print(f"  class:        {meta.executor}")
    print(f"  wheel:        {resolved.file.filename} sha256 {resolved.sha256}")
    print(f"  requirements: {', '.join(meta.requirements) or '(none)'}")
    for m in meta.models:
        print(f"  model:        {m.path} sha256 {m.sha256}")
    for e in info.get("endpoints", []):
        params = ", ".join(f"{p['name']}: {p.get('type', '?')}" for p in e.get("parameters", []))
        flag = " (read-only)" if e.get("read_only") else ""
        print(f"  endpoint:     {e['name']}{flag}({params})")
    return 0


def _endpoints(python: str, executor: str, cache: str) -> list[dict[str, Any]]:
    """The endpoints of ``executor``, imported in its own environment."""
    from meshflow.errors import ConfigError
    from meshflow.hub.layer import runtime_layer

    env = {**os.environ, "MESHFLOW_RUNTIME_PATH": runtime_layer(cache)}
    done = subprocess.run(
        [python, "-I", "-m", "meshflow.hub.describe", executor],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(f"cannot import {executor} in its environment:\n{done.stderr[-2000:]}")
    endpoints: list[dict[str, Any]] = json.loads(done.stdout).get("endpoints", [])
    return endpoints


def _pull(args: argparse.Namespace, hub: Any, cache: str) -> int:
    from meshflow.hub.environment import ensure_environment
    from meshflow.hub.resolve import resolve

    resolved = resolve(_ref(args.ref), hub, cache)
    env = ensure_environment(resolved, hub, cache)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        shutil.copy(resolved.wheel, args.out)
    meta = resolved.metadata
    print(f"{meta.name} {meta.version} ({resolved.file.filename}) environment {env.short_key}")
    print(f"  {env.path}")
    sys.stdout.flush()
    return 0
