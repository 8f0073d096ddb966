"""Where a served Executor class comes from, when it is a hub executor: its hub project's
name and version (``meshflow-executor.json`` in its package) and the environment it runs in
(``meshflow-env.json`` at the interpreter's prefix). The ``Endpoints`` answer carries them,
so that the gateway's ``flow`` query shows which version each deployment runs."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

METADATA_FILE = "meshflow-executor.json"
ENV_MARKER = "meshflow-env.json"


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def hub_provenance(cls: type) -> tuple[str, str, str] | None:
    """``(name, version, environment)`` of a hub executor class, else None."""
    return _of_module(cls.__module__)


@functools.cache
def _of_module(module: str) -> tuple[str, str, str] | None:
    top = module.split(".")[0]
    package = sys.modules.get(top)
    package_file = getattr(package, "__file__", None)
    if not package_file:
        return None
    meta = _read(os.path.join(os.path.dirname(package_file), METADATA_FILE))
    if meta is None or "name" not in meta or "version" not in meta:
        return None
    env = _read(os.path.join(sys.prefix, ENV_MARKER)) or {}
    return str(meta["name"]), str(meta["version"]), str(env.get("key", ""))[:12]
