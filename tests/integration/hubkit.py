"""Executor projects and library wheels for the hub's tests, built for real (uv build) in
temporary folders: no network, no files outside the test's own folders."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from meshflow.hub.index import FolderHub
from meshflow.hub.project import build, module_name, new_project

# An executor that answers with its own version and the version of `tinylib` it imports.
VERSION_EXECUTOR = """\
from __future__ import annotations

import json
import os
import sys
from typing import Any

from meshflow import DocumentArray, Executor, requests

HERE = os.path.dirname(os.path.abspath(__file__))


class {cls}(Executor):
    @requests
    def report(self, docs: DocumentArray, **kwargs: Any) -> None:
        with open(os.path.join(HERE, "meshflow-executor.json")) as fh:
            meta = json.load(fh)
        try:
            import tinylib

            lib = tinylib.VERSION
        except ImportError:
            lib = "absent"
        for doc in docs:
            doc.tags["{name}"] = meta["version"]
            doc.tags["{name}:tinylib"] = lib
            doc.tags["{name}:python"] = sys.executable
"""


def make_library(root: str, version: str) -> str:
    """A wheel of the tiny pure-Python library ``tinylib`` at ``version``."""
    folder = os.path.join(root, f"tinylib-{version}")
    os.makedirs(os.path.join(folder, "tinylib"), exist_ok=True)
    with open(os.path.join(folder, "pyproject.toml"), "w") as fh:
        fh.write(
            textwrap.dedent(f"""\
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "tinylib"
            version = "{version}"
            [tool.setuptools]
            packages = ["tinylib"]
            """)
        )
    with open(os.path.join(folder, "tinylib", "__init__.py"), "w") as fh:
        fh.write(f'VERSION = "{version}"\n')
    return build(folder, os.path.join(root, "wheels"), executor=False)


def make_executor(
    root: str,
    name: str,
    version: str,
    requirements: Sequence[str] = (),
    *,
    code: str | None = None,
    models: dict[str, bytes] | None = None,
) -> str:
    """A hub executor project ``name`` at ``version`` (scaffolded by ``meshflow hub new``);
    returns its folder."""
    parent = os.path.join(root, "projects", f"{name}-{version}")
    os.makedirs(parent, exist_ok=True)
    folder = new_project(name, parent)
    module = module_name(name)
    cls = "".join(p.capitalize() for p in name.split("-"))
    path = os.path.join(folder, "pyproject.toml")
    with open(path) as fh:
        text = fh.read()
    text = text.replace('version = "0.1.0"', f'version = "{version}"')
    text = text.replace("dependencies = []", f"dependencies = {list(requirements)!r}")
    with open(path, "w") as fh:
        fh.write(text.replace("'", '"'))
    with open(os.path.join(folder, module, "executor.py"), "w") as fh:
        fh.write(code if code is not None else VERSION_EXECUTOR.format(cls=cls, name=name))
    if models:
        import json

        meta_path = os.path.join(folder, module, "meshflow-executor.json")
        with open(meta_path) as fh:
            meta = json.load(fh)
        meta["models"] = []
        for rel, content in models.items():
            with open(os.path.join(folder, module, "models", rel), "wb") as fh:
                fh.write(content)
            meta["models"].append({"path": f"{module}/models/{rel}", "sha256": ""})
        with open(meta_path, "w") as fh:
            json.dump(meta, fh)
    return folder


@dataclass
class HubSetup:
    hub: FolderHub
    cache: str
    wheels: dict[str, str]
    """``name==version`` -> its wheel."""


def populate(root: str) -> HubSetup:
    """A folder hub holding tinylib 1.0.0 and 2.0.0, ``version-echo`` 1.0.0 and 2.0.0, and
    ``tiny-one`` / ``tiny-two`` (pinning tinylib 1 and 2)."""
    hub = FolderHub(os.path.join(root, "hub"))
    wheels = build_wheels(root)
    for key, wheel in wheels.items():
        if key.startswith("tinylib"):
            hub.add(wheel)
        else:
            hub.push(wheel)
    return HubSetup(hub, os.path.join(root, "cache"), wheels)


def build_wheels(root: str) -> dict[str, str]:
    """The wheels :func:`populate` publishes, by ``name==version``."""
    wheels: dict[str, str] = {}
    for v in ("1.0.0", "2.0.0"):
        wheels[f"tinylib=={v}"] = make_library(root, v)
    for name, version, reqs in (
        ("version-echo", "1.0.0", ()),
        ("version-echo", "2.0.0", ()),
        ("tiny-one", "1.0.0", ("tinylib==1.0.0",)),
        ("tiny-two", "1.0.0", ("tinylib>=2,<3",)),
    ):
        wheel = build(make_executor(root, name, version, reqs), os.path.join(root, "wheels"))
        wheels[f"{name}=={version}"] = wheel
    return wheels


UV_DEFAULT = "uv-default"


@contextmanager
def hub_environ(
    hub_location: str, cache: str, uv_cache: str, default_index: str | None = None
) -> Iterator[None]:
    """MESHFLOW_HUB and MESHFLOW_HUB_CACHE for the Flows a test starts; uv's cache and its
    default index kept in the test's folders (nothing is fetched from elsewhere), unless
    ``default_index`` is ``UV_DEFAULT`` (uv's own default index)."""
    values = {
        "MESHFLOW_HUB": hub_location,
        "MESHFLOW_HUB_CACHE": cache,
        "UV_CACHE_DIR": uv_cache,
        "UV_DEFAULT_INDEX": default_index or FolderHub(hub_location).index_url,
    }
    old = {k: os.environ.get(k) for k in values}
    if default_index == UV_DEFAULT:
        del values["UV_DEFAULT_INDEX"]
        os.environ.pop("UV_DEFAULT_INDEX", None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
