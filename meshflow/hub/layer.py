"""The runtime layer: meshflow and the packages it needs, and nothing else, for a hub
executor's environment.

A hub executor's virtual environment holds its own requirements only. meshflow itself (which
serves the executor over gRPC) comes from a *layer*: a folder of symbolic links to meshflow's
package and to every distribution in its dependency closure, as installed for the running
Flow. Nothing is downloaded or copied, so a cached environment starts offline and at once,
and always runs the meshflow of the Flow that starts it.

The environment's ``meshflow_runtime.pth`` adds the folder named by ``MESHFLOW_RUNTIME_PATH``
(set per process by the Flow) *after* the environment's own site-packages: when the executor
pins another version of a package meshflow also uses, the executor's copy wins in its
process. Packages of the Flow's environment outside meshflow's closure (the Flow's other
executors' libraries) are not in the layer, so they cannot leak in.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata as md
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from meshflow.errors import ConfigError

PTH_NAME = "meshflow_runtime.pth"
# One line, run by `site` at start-up (a comprehension would not see `site`: exec scoping).
PTH_LINE = (
    "import os, site; list(map(site.addsitedir, filter(None, "
    "os.environ.get('MESHFLOW_RUNTIME_PATH', '').split(os.pathsep))))\n"
)
_built: dict[str, str] = {}


def _closure(root: str) -> Iterator[tuple[md.Distribution, set[str]]]:
    """Every installed distribution ``root`` needs (extras followed), each once."""
    seen: dict[str, set[str]] = {}
    todo: list[tuple[str, set[str]]] = [(root, set())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | extras
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional dependency not installed here: nothing to link
        yield dist, extras
        for text in dist.requires or ():
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            marker_env = [{"extra": e} for e in (extras or {""})]
            if req.marker is None or any(req.marker.evaluate(env) for env in marker_env):
                todo.append((req.name, set(req.extras)))


def _top_levels(dist: md.Distribution) -> set[str]:
    names = set()
    for file in dist.files or ():
        parts = file.parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        names.add(parts[0])
    return names


@functools.cache
def runtime_links() -> dict[str, str]:
    """Name in the layer -> what it links to: meshflow's package and its closure (computed
    once per process: ~0.1 s of reading installed metadata)."""
    import meshflow

    package = os.path.dirname(os.path.abspath(meshflow.__file__))
    links: dict[str, str] = {"meshflow": package}
    try:
        md.distribution("meshflow")
    except md.PackageNotFoundError:
        raise ConfigError(
            "hub executors need meshflow installed (pip install meshflow, or -e . in a "
            "checkout): its metadata says which packages the executor's environment shares"
        ) from None
    for dist, _ in _closure("meshflow"):
        base = str(dist.locate_file(""))
        if canonicalize_name(dist.metadata["Name"] or "") == "meshflow":
            # its own files: only the dist-info (an editable install points elsewhere)
            names = {n for n in _top_levels(dist) if n.endswith(".dist-info")}
        else:
            names = _top_levels(dist)
        for name in names:
            target = os.path.join(base, name)
            if name not in links and os.path.exists(target):
                links[name] = target
    return links


def runtime_layer(cache_dir: str) -> str:
    """The layer's folder in ``cache_dir/runtime/`` (made once per set of links)."""
    links = dict(runtime_links())
    key = hashlib.sha256(json.dumps([sys.version, sorted(links.items())]).encode()).hexdigest()[:20]
    if key in _built:
        return _built[key]
    root = os.path.join(cache_dir, "runtime")
    path = os.path.join(root, key)
    if not os.path.isdir(path):
        os.makedirs(root, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=root, prefix=".layer-")
        try:
            for name, target in links.items():
                os.symlink(target, os.path.join(tmp, name))
            with contextlib.suppress(OSError):  # another Flow made it first
                os.rename(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _built[key] = path
    return path
