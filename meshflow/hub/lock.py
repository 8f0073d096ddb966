"""``meshflow hub lock flow.yml``: every ``hub://`` reference of a Flow pinned to one wheel.

The lock file sits next to the Flow (``flow.yml`` -> ``flow.hub.lock``) and maps each
reference, as written in the Flow, to the exact version and the sha256 of the wheel it
resolved to. :func:`meshflow.flow.config.load_flow` reads it: later starts use those pins
(``hub://NAME@VERSION#sha256=...``) instead of resolving again, so a Flow starts the same
executors until it is locked again, and a wheel changed behind the lock is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml

from meshflow.errors import ConfigError
from meshflow.hub.index import Hub
from meshflow.hub.reference import HubRef, is_hub_ref
from meshflow.hub.resolve import resolve

HEADER = (
    "# Written by `meshflow hub lock`: the exact executor versions this Flow starts.\n"
    "# Commit it next to the Flow; run `meshflow hub lock` again to take newer versions.\n"
)


def lock_path(flow_path: str) -> str:
    stem, _ = os.path.splitext(os.path.abspath(flow_path))
    return stem + ".hub.lock"


def flow_refs(flow_path: str) -> list[str]:
    """The ``hub://`` references a Flow YAML uses, in order, each once."""
    try:
        with open(flow_path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read the Flow YAML {flow_path!r}: {exc.strerror}") from None
    executors = data.get("executors") if isinstance(data, dict) else None
    refs: list[str] = []
    for spec in executors or ():
        uses = spec.get("uses") if isinstance(spec, dict) else None
        if isinstance(uses, str) and is_hub_ref(uses) and uses not in refs:
            refs.append(uses)
    return refs


def write_lock(flow_path: str, hub: Hub, cache_dir: str) -> tuple[str, dict[str, Any]]:
    """Resolve every reference of the Flow and write the lock file; returns its path and
    content."""
    refs = flow_refs(flow_path)
    if not refs:
        raise ConfigError(f"{flow_path} uses no hub executor (no 'uses: hub://...'): no lock")
    pins: dict[str, Any] = {}
    for text in refs:
        r = resolve(HubRef.parse(text), hub, cache_dir)
        pins[text] = {
            "name": r.metadata.name,
            "version": r.metadata.version,
            "file": r.file.filename,
            "sha256": r.sha256,
        }
    content = {"hub": hub.location, "executors": pins}
    path = lock_path(flow_path)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(HEADER)
        yaml.safe_dump(content, fh, sort_keys=False)
    return path, content


def read_lock(flow_path: str) -> dict[str, str]:
    """Reference -> pinned reference, from the Flow's lock file (empty when it has none)."""
    path = lock_path(flow_path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the lock file {path}: {exc}") from None
    pins = data.get("executors") if isinstance(data, dict) else None
    if not isinstance(pins, Mapping):
        raise ConfigError(f"{path}: not a hub lock file; write it again with `meshflow hub lock`")
    out = {}
    for text, pin in pins.items():
        try:
            out[str(text)] = f"hub://{pin['name']}@{pin['version']}#sha256={pin['sha256']}"
        except (KeyError, TypeError):
            raise ConfigError(
                f"{path}: the entry for {text!r} lacks name, version or sha256; write the lock "
                "file again with `meshflow hub lock`"
            ) from None
    return out
