"""The app's executors as hub packages: ``python -m services.hub push [--hub H] [NAME...]``.

Each service folder holds ``hub.json`` (its hub name, version, description, class and
requirements). This module assembles a standard project per service in a temporary folder
(``pyproject.toml``, the ``services`` package with only that service and the shared
``modality`` module, and ``services/meshflow-executor.json``), builds its wheel with
:func:`meshflow.hub.project.build` and publishes it, so that a Flow can use
``hub://shop-ranker@1.0.0`` in place of ``services.ranker:Ranker``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

from meshflow.hub.index import open_hub
from meshflow.hub.metadata import METADATA_FILE
from meshflow.hub.project import build

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICES = ("image_encoder", "text_encoder", "vector_indexer", "ranker")

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = {name}
version = {version}
description = {description}
requires-python = ">=3.10"
dependencies = {requirements}

[tool.setuptools]
packages = ["services", "services.{service}"]

[tool.setuptools.package-data]
services = ["{metadata}"]
"services.{service}" = ["README.md"]
"""


def hub_info(service: str) -> dict[str, object]:
    with open(os.path.join(HERE, service, "hub.json"), encoding="utf-8") as fh:
        data: dict[str, object] = json.load(fh)
    return data


def assemble(service: str, parent: str) -> str:
    """The hub project of ``service`` in ``parent``; returns its folder."""
    info = hub_info(service)
    root = os.path.join(parent, str(info["name"]))
    package = os.path.join(root, "services")
    os.makedirs(package)
    for shared in ("__init__.py", "modality.py"):
        shutil.copy(os.path.join(HERE, shared), package)
    shutil.copytree(
        os.path.join(HERE, service),
        os.path.join(package, service),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "hub.json"),
    )
    with open(os.path.join(package, METADATA_FILE), "w", encoding="utf-8") as fh:
        json.dump({k: info[k] for k in ("executor", "state_scope") if k in info}, fh)
    with open(os.path.join(root, "pyproject.toml"), "w", encoding="utf-8") as fh:
        fh.write(
            _PYPROJECT.format(
                name=json.dumps(info["name"]),
                version=json.dumps(info["version"]),
                description=json.dumps(info["description"]),
                requirements=json.dumps(info["requirements"]),
                service=service,
                metadata=METADATA_FILE,
            )
        )
    return root


def build_wheels(services: tuple[str, ...] = SERVICES, out_dir: str | None = None) -> list[str]:
    """The wheels of ``services``, built into ``out_dir`` (a temporary folder when None)."""
    out_dir = out_dir or tempfile.mkdtemp(prefix="meshflow-services-")
    with tempfile.TemporaryDirectory(prefix="meshflow-services-src-") as work:
        return [build(assemble(s, work), out_dir) for s in services]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.hub", description=__doc__)
    parser.add_argument("command", choices=["build", "push"])
    parser.add_argument("services", nargs="*", help=f"some of {', '.join(SERVICES)} (default: all)")
    parser.add_argument("--hub", help="folder or index URL (default: $MESHFLOW_HUB)")
    parser.add_argument("--out", help="build: the folder for the wheels")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(SERVICES))
    if unknown:
        parser.error(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
    args.services = args.services or list(SERVICES)
    wheels = build_wheels(tuple(args.services), args.out)
    for wheel in wheels:
        if args.command == "push":
            pushed = open_hub(args.hub).push(wheel)
            print(f"pushed {pushed.project} {pushed.version}")
        else:
            print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
