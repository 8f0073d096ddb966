"""Where a served Executor class comes from, when it is a hub executor: its hub project's
name and version (``meshflow-executor.json`` in its package) and the environment it runs in
(``meshflow-env.json`` at the interpreter's prefix). The ``Endpoints`` answer carries them,
so that the gateway's ``flow`` query shows which version each deployment runs."""

from __future__ import annotations

import functools
import os
import sys

from meshflow.processes import read_json_object

METADATA_FILE = "meshflow-executor.json"
ENV_MARKER = "meshflow-env.json"


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
    meta = read_json_object(os.path.join(os.path.dirname(package_file), METADATA_FILE))
    if meta is None or "name" not in meta or "version" not in meta:
        return None
    env = read_json_object(os.path.join(sys.prefix, ENV_MARKER)) or {}
    return str(meta["name"]), str(meta["version"]), str(env.get("key", ""))[:12]
