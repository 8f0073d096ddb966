"""One virtual environment per hub executor, built from its wheel and requirements, cached by
content.

The key is the sha256 of (the wheel's sha256, its requirements, the Python it runs on): two
Flows using the same executor version share one environment; a new version, a changed
requirement, other ``MESHFLOW_HUB_CONSTRAINT`` files or another interpreter get a new one.
uv builds it (``uv venv`` then ``uv pip install WHEEL`` against the hub's index first, then
the sources pip is configured with: :mod:`meshflow.hub.sources`); pip is the fallback when uv
is missing (``MESHFLOW_HUB_INSTALLER=pip`` forces it). The installer's output is the progress
shown while building. An environment is usable once ``meshflow-env.json`` is written into
it, last; a half-built one is removed and built again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from meshflow.hub.errors import EnvironmentBuildError, HashMismatchError
from meshflow.hub.index import Hub
from meshflow.hub.layer import PTH_LINE, PTH_NAME
from meshflow.hub.metadata import sha256_file
from meshflow.hub.resolve import Resolved
from meshflow.hub.sources import constraints_digest, meshflow_constraints, pip_sources

MARKER = "meshflow-env.json"
LAYOUT = 1
"""Changes when what meshflow writes into an environment changes: older ones are rebuilt."""
BUILD_TIMEOUT = 1800.0

Progress = Callable[[str], None]


def default_cache_dir() -> str:
    """``MESHFLOW_HUB_CACHE``, else ``~/.meshflow/cache``."""
    return os.environ.get("MESHFLOW_HUB_CACHE") or os.path.join(
        os.path.expanduser("~"), ".meshflow", "cache"
    )


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Environment:
    """A built environment of one hub executor."""

    path: str
    key: str
    name: str
    version: str
    wheel_sha256: str
    built_now: bool = False
    build_seconds: float = 0.0

    @property
    def python(self) -> str:
        return os.path.join(self.path, "bin", "python")

    @property
    def short_key(self) -> str:
        return self.key[:12]

    def manifest(self) -> dict[str, Any]:
        with open(os.path.join(self.path, MARKER), encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
        return data


def environment_key(wheel_sha256: str, requirements: tuple[str, ...], constraints: str = "") -> str:
    """``constraints``: :func:`~meshflow.hub.sources.constraints_digest` of the constraint
    files the build is given."""
    python = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
    python += f".{sys.version_info[2]}-{sys.platform}"
    parts: list[Any] = [LAYOUT, wheel_sha256, sorted(requirements), python, sys.base_prefix]
    if constraints:
        parts.append(constraints)
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _key(resolved: Resolved) -> str:
    digest = constraints_digest(meshflow_constraints())
    return environment_key(resolved.sha256, resolved.metadata.requirements, digest)


def installer() -> str:
    """``'uv'`` (the default, when its binary is there) or ``'pip'``."""
    forced = os.environ.get("MESHFLOW_HUB_INSTALLER", "")
    if forced in ("uv", "pip"):
        return forced
    return "uv" if _uv_bin() is not None else "pip"


def _uv_bin() -> str | None:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def cached_environment(resolved: Resolved, cache_dir: str) -> Environment | None:
    """The environment of ``resolved`` when it is built already, else None."""
    key = _key(resolved)
    path = os.path.join(cache_dir, "envs", key[:24])
    if os.path.exists(os.path.join(path, MARKER)):
        m = resolved.metadata
        return Environment(path, key, m.name, m.version, resolved.sha256)
    return None


def ensure_environment(
    resolved: Resolved, hub: Hub, cache_dir: str, progress: Progress = stderr_progress
) -> Environment:
    """The environment of ``resolved``, built now unless cached."""
    found = cached_environment(resolved, cache_dir)
    if found is not None:
        return found
    key = _key(resolved)
    envs = os.path.join(cache_dir, "envs")
    os.makedirs(envs, exist_ok=True)
    path = os.path.join(envs, key[:24])
    with _locked(path + ".lock"):
        found = cached_environment(resolved, cache_dir)  # built while we waited
        if found is not None:
            return found
        shutil.rmtree(path, ignore_errors=True)  # a half-built one
        started = time.monotonic()
        meta = resolved.metadata
        what = f"{meta.name} {meta.version}"
        progress(f"hub: building the environment of {what} ({key[:12]}) with {installer()}")
        try:
            freeze = _build(path, resolved, hub, progress, what)
            _check_models(path, resolved)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        seconds = time.monotonic() - started
        manifest = {
            "name": meta.name,
            "version": meta.version,
            "executor": meta.executor,
            "wheel": resolved.file.filename,
            "wheel_sha256": resolved.sha256,
            "key": key,
            "python": sys.version.split()[0],
            "installed": freeze,
            "build_seconds": round(seconds, 3),
        }
        tmp = os.path.join(path, MARKER + ".part")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2)
        os.replace(tmp, os.path.join(path, MARKER))
        progress(f"hub: environment of {what} ready in {seconds:.1f} s")
        return Environment(path, key, meta.name, meta.version, resolved.sha256, True, seconds)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _site_packages(path: str) -> str:
    v = sys.version_info
    return os.path.join(path, "lib", f"python{v[0]}.{v[1]}", "site-packages")


def _build(path: str, resolved: Resolved, hub: Hub, progress: Progress, what: str) -> list[str]:
    python = os.path.join(path, "bin", "python")
    constraints = meshflow_constraints()
    uv = _uv_bin() if installer() == "uv" else None
    if uv is not None:
        _run([uv, "venv", "--quiet", "--python", sys.executable, path], progress, what)
        # The hub first, then pip's configured sources (uv does not read pip's
        # configuration), then uv's default index (PyPI, UV_DEFAULT_INDEX or pip's index-url).
        sources = pip_sources()
        default_set = any(os.environ.get(v) for v in ("UV_DEFAULT_INDEX", "UV_INDEX_URL"))
        _run(
            [uv, "pip", "install", "--python", python, "--index", hub.index_url]
            + sources.uv_args(default_index_set=default_set)
            + [arg for c in constraints for arg in ("--constraint", c)]
            + [resolved.wheel],
            progress,
            what,
        )
        frozen = _run([uv, "pip", "freeze", "--python", python], None, what)
    else:
        _run([sys.executable, "-m", "venv", "--without-pip", path], progress, what)
        pip = [sys.executable, "-m", "pip", "--python", python]
        # pip reads its own configuration; the hub is one more index.
        _run(
            [*pip, "install", "--extra-index-url", hub.index_url]
            + [arg for c in constraints for arg in ("--constraint", c)]
            + [resolved.wheel],
            progress,
            what,
        )
        frozen = _run([*pip, "freeze"], None, what)
    with open(os.path.join(_site_packages(path), PTH_NAME), "w", encoding="utf-8") as fh:
        fh.write(PTH_LINE)
    return [line for line in frozen.splitlines() if line.strip()]


def _run(command: list[str], progress: Progress | None, what: str) -> str:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if progress is not None else subprocess.PIPE,
            text=True,
            env=env,
        )
    except OSError as exc:
        raise EnvironmentBuildError(f"cannot run {command[0]}: {exc}") from None
    lines: list[str] = []
    watchdog = threading.Timer(BUILD_TIMEOUT, proc.kill)  # a hung installer ends the build
    watchdog.daemon = True
    watchdog.start()
    try:
        with proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if progress is not None and line.strip():
                    progress(f"hub: {what}: {line.rstrip()}")
            err = proc.stderr.read() if proc.stderr is not None else ""
            code = proc.wait()
    finally:
        watchdog.cancel()
    if code != 0:
        reason = ("".join(lines) + err).strip()
        raise EnvironmentBuildError(
            f"the environment of {what} could not be built: "
            f"{os.path.basename(command[0])} said:\n{reason}\n"
            "fix the requirement in the executor's pyproject.toml (or publish what it needs to "
            "the hub) and push a new version"
        )
    return "".join(lines)


def _check_models(path: str, resolved: Resolved) -> None:
    site = _site_packages(path)
    for model in resolved.metadata.models:
        file = os.path.join(site, model.path)
        if not os.path.isfile(file):
            raise HashMismatchError(
                f"{resolved.file.filename}: model file {model.path} listed in its metadata is "
                "not in the wheel; list it as package data in pyproject.toml"
            )
        actual = sha256_file(file)
        if model.sha256 and actual != model.sha256:
            raise HashMismatchError(
                f"{resolved.file.filename}: model file {model.path} has sha256 {actual}, its "
                f"metadata says {model.sha256}; rebuild with `meshflow hub push PROJECT_DIR`"
            )
