"""An executor project: ``meshflow hub new NAME`` scaffolds one, :func:`build` makes its wheel.

A project is a standard Python project (``pyproject.toml`` with the setuptools backend) whose
package holds ``meshflow-executor.json`` as package data. :func:`build` first refreshes that
file from ``pyproject.toml`` (name, version, description, dependencies) and hashes the model
files it lists, then builds the wheel with ``uv build`` (``pip wheel`` when uv is missing),
without build isolation (the build backend comes from the running environment: no network
needed), unless asked otherwise.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any

from meshflow.errors import ConfigError
from meshflow.hub.environment import _uv_bin, installer
from meshflow.hub.errors import EnvironmentBuildError
from meshflow.hub.metadata import METADATA_FILE, ExecutorMetadata, ModelFile, sha256_file

_PROJECT = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")


def module_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def new_project(name: str, parent: str = ".", *, description: str = "") -> str:
    """Scaffold the project ``name`` in ``parent/name``; returns its folder."""
    if not _PROJECT.match(name):
        raise ConfigError(
            f"{name!r} is not a project name: start with a letter, then letters, digits, -_."
        )
    root = os.path.join(parent, name)
    if os.path.exists(root):
        raise ConfigError(f"{root} exists already; choose another name or folder")
    module, cls = module_name(name), class_name(name)
    description = description or f"The {name} executor."
    files = {
        "pyproject.toml": _PYPROJECT.format(name=name, module=module, description=description),
        "README.md": _README.format(name=name, module=module, cls=cls),
        f"{module}/__init__.py": f'"""{description}"""\n\nfrom {module}.executor import {cls}\n\n'
        f'__all__ = ["{cls}"]\n',
        f"{module}/executor.py": _EXECUTOR.format(cls=cls, description=description),
        f"{module}/models/.gitkeep": "",
        f"{module}/{METADATA_FILE}": json.dumps(
            ExecutorMetadata(
                name=name,
                version="0.1.0",
                description=description,
                executor=f"{module}.executor:{cls}",
            ).to_dict(),
            indent=2,
        )
        + "\n",
        "tests/test_executor.py": _TEST.format(module=module, cls=cls),
    }
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return root


def _pyproject_data(root: str) -> dict[str, Any]:
    import tomllib

    path = os.path.join(root, "pyproject.toml")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{root} is not an executor project: {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _pyproject(root: str) -> dict[str, Any]:
    path = os.path.join(root, "pyproject.toml")
    project = _pyproject_data(root).get("project")
    if not isinstance(project, dict) or not project.get("name") or not project.get("version"):
        raise ConfigError(f"{path}: [project] needs a name and a static version")
    return project


def metadata_path(root: str) -> str:
    found = sorted(glob.glob(os.path.join(root, "*", METADATA_FILE)))
    found += sorted(glob.glob(os.path.join(root, "src", "*", METADATA_FILE)))
    if not found:
        raise ConfigError(
            f"{root} has no <package>/{METADATA_FILE}; scaffold a project with "
            "`meshflow hub new NAME` and copy your executor into it"
        )
    return found[0]


def refresh_metadata(root: str) -> ExecutorMetadata:
    """Copy name, version, description and dependencies from pyproject.toml into the
    project's metadata file and hash its model files; returns what was written."""
    project = _pyproject(root)
    path = metadata_path(root)
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except ValueError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    current = ExecutorMetadata.from_dict({**data, "name": "-", "version": "-"}, path)
    package_dir = os.path.dirname(path)
    base = os.path.dirname(package_dir)
    models = []
    for model in current.models:
        file = os.path.join(base, model.path)
        if not os.path.isfile(file):
            raise ConfigError(f"{path}: model file {model.path} not found under {base}")
        models.append(ModelFile(model.path, sha256_file(file)))
    meta = ExecutorMetadata(
        name=str(project["name"]),
        version=str(project["version"]),
        description=str(project.get("description") or current.description),
        executor=current.executor,
        requirements=tuple(str(r) for r in project.get("dependencies") or ()),
        models=tuple(models),
        state_scope=current.state_scope,
        extra=current.extra,
    )
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(meta.to_dict(), fh, indent=2)
        fh.write("\n")
    return meta


def build(
    root: str, out_dir: str | None = None, *, isolated: bool = False, executor: bool = True
) -> str:
    """Build the project's wheel into ``out_dir`` (a new temporary folder when None);
    returns the wheel's path. ``executor=False``: a plain library (no metadata to refresh)."""
    if executor:
        refresh_metadata(root)
    out_dir = out_dir or tempfile.mkdtemp(prefix="meshflow-wheel-")
    os.makedirs(out_dir, exist_ok=True)
    before = set(os.listdir(out_dir))
    unmet = [] if isolated else unmet_build_requirements(root)
    isolated = isolated or bool(unmet)  # the backend is not installed here: fetch it
    uv = _uv_bin() if installer() == "uv" else None
    if uv is not None:
        command = [uv, "build", "--wheel", "--python", sys.executable, "--out-dir", out_dir]
        command += [] if isolated else ["--no-build-isolation"]
        command.append(root)
    else:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", out_dir, root]
        command += [] if isolated else ["--no-build-isolation"]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=env
    )
    if done.returncode != 0:
        why = (
            f" (its build backend {', '.join(unmet)} is not installed in this environment, so"
            " it was built in isolation, which fetches the backend from the package index;"
            " install it here to build offline)"
            if unmet
            else ""
        )
        raise EnvironmentBuildError(
            f"building {root} failed{why}:\n{(done.stdout + done.stderr).strip()[-4000:]}"
        )
    wheels = [f for f in set(os.listdir(out_dir)) - before if f.endswith(".whl")]
    if not wheels:  # the same wheel built again: the newest of the folder
        wheels = sorted(
            (f for f in os.listdir(out_dir) if f.endswith(".whl")),
            key=lambda f: os.path.getmtime(os.path.join(out_dir, f)),
        )[-1:]
    if not wheels:
        raise EnvironmentBuildError(f"building {root} made no wheel in {out_dir}")
    return os.path.join(out_dir, wheels[0])


def unmet_build_requirements(root: str) -> list[str]:
    """The project's ``[build-system] requires`` this environment does not satisfy (a build
    without isolation would fail on them); a project without the table needs setuptools."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    system = _pyproject_data(root).get("build-system")
    listed = system.get("requires") if isinstance(system, dict) else None
    unmet = []
    for text in listed if isinstance(listed, list) else ["setuptools>=40.8"]:
        try:
            req = Requirement(str(text))
        except InvalidRequirement:
            unmet.append(str(text))  # the isolated build reports it
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            unmet.append(str(text))
            continue
        if not req.specifier.contains(have, prereleases=True):
            unmet.append(str(text))
    return unmet


_PYPROJECT = """\
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "{description}"
requires-python = ">=3.10"
# What the executor needs, pinned as tightly as you like: its environment holds only these.
# meshflow itself is not listed: the Flow that runs the executor provides it.
dependencies = []

[tool.setuptools]
packages = ["{module}"]

[tool.setuptools.package-data]
{module} = ["meshflow-executor.json", "models/*"]
"""

_README = """\
# {name}

A meshflow executor, published to a hub (a Python package index) and used from a Flow as
`hub://{name}@0.1.0`.

- `{module}/executor.py`: the `{cls}` class and its endpoints.
- `{module}/meshflow-executor.json`: its hub metadata. `meshflow hub push .` fills in name,
  version, description and requirements from `pyproject.toml` and the sha256 of every model
  file listed under `models` (paths relative to this folder, e.g. `{module}/models/w.bin`).
- `tests/`: `pytest` runs them in any environment that has meshflow.

```
meshflow hub push .                      # build the wheel and publish it
meshflow hub show {name}
```

```python
from meshflow import Flow
with Flow().add(name="{module}", uses="hub://{name}@0.1.0") as f:
    print(f.post("/", inputs=[]))
```
"""

_EXECUTOR = '''\
"""{description}"""

from __future__ import annotations

from typing import Any

from meshflow import DocumentArray, Executor, requests


class {cls}(Executor):
    """{description}"""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    @requests
    def process(self, docs: DocumentArray, **kwargs: Any) -> DocumentArray:
        for doc in docs:
            doc.tags["{cls}"] = "seen"
        return docs
'''

_TEST = """\
from meshflow import Document, DocumentArray

from {module}.executor import {cls}


def test_process_tags_every_document() -> None:
    docs = {cls}().process(DocumentArray([Document(text="hello")]))
    assert docs[0].tags["{cls}"] == "seen"
"""
