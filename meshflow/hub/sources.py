"""Where a hub environment's requirements come from besides the hub: the package sources
pip is configured with on this machine, and the constraints meshflow is given.

An environment built with pip already follows pip's configuration (``pip.conf`` files and
``PIP_*`` variables). uv reads neither, so the same sources are handed to it: a machine whose
pip installs from a local wheel folder or a company mirror builds hub environments from the
same places. pip's own reading of its configuration is used (``pip config list``), so its
rules for files, scopes and variables hold as they are.

``MESHFLOW_HUB_CONSTRAINT`` names constraint files (``pip -c`` / ``uv --constraint``; several
separated by ``os.pathsep``) applied to every environment build: the way to say "the CPU build
of torch, the one this machine has" without changing an executor's requirements. Their
content is part of an environment's key, so changing them builds new environments.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass

from meshflow.hub.errors import EnvironmentBuildError

CONSTRAINT_ENV = "MESHFLOW_HUB_CONSTRAINT"
_KEYS = ("index-url", "extra-index-url", "find-links", "constraint")
# pip's precedence, lowest first: a section's value is overridden by the same key in a later
# one (``install`` is the command's own section; ``:env:`` is a PIP_* variable).
_SECTIONS = ("global", "install", ":env:")


@dataclass(frozen=True)
class Sources:
    """Package sources and constraints, as pip names them."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()

    def uv_args(self, *, default_index_set: bool) -> list[str]:
        """``uv pip install`` options after the hub's ``--index``: the extra indexes next in
        pip's order, the wheel folders, the constraints, and pip's index in place of uv's
        default unless uv is given its own (``default_index_set``)."""
        args: list[str] = []
        for url in self.extra_index_urls:
            args += ["--index", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for path in self.constraints:
            args += ["--constraint", path]
        if self.index_url and not default_index_set:
            args += ["--default-index", self.index_url]
        return args


def parse_pip_config(text: str) -> Sources:
    """The sources in ``pip config list``'s output (lines ``section.key='value'``)."""
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        section, dot, key = name.strip().rpartition(".")
        if not sep or not dot or key not in _KEYS or section not in _SECTIONS:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        found.setdefault(key, {})[section] = value

    def pick(key: str) -> list[str]:
        by_section = found.get(key, {})
        for section in reversed(_SECTIONS):
            if section in by_section:
                return by_section[section].split()
        return []

    index = pick("index-url")
    return Sources(
        index_url=index[0] if index else None,
        extra_index_urls=tuple(pick("extra-index-url")),
        find_links=tuple(pick("find-links")),
        constraints=tuple(pick("constraint")),
    )


def pip_sources(python: str = sys.executable) -> Sources:
    """The sources pip (of ``python``) is configured with; none when pip is not there."""
    try:
        proc = subprocess.run(
            [python, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return Sources()
    if proc.returncode != 0:
        return Sources()
    return parse_pip_config(proc.stdout)


def meshflow_constraints() -> tuple[str, ...]:
    """The files named by ``MESHFLOW_HUB_CONSTRAINT``, each checked to exist."""
    raw = os.environ.get(CONSTRAINT_ENV, "")
    paths = tuple(os.path.abspath(p) for p in raw.split(os.pathsep) if p.strip())
    for path in paths:
        if not os.path.isfile(path):
            raise EnvironmentBuildError(
                f"{CONSTRAINT_ENV} names {path}, which is not a file; point it at a "
                "constraints file (lines such as `torch==2.13.0+cpu`) or unset it"
            )
    return paths


def constraints_digest(paths: tuple[str, ...]) -> str:
    """sha256 over the constraint files' content, in order ('' when there are none)."""
    if not paths:
        return ""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            digest.update(hashlib.sha256(fh.read()).digest())
    return digest.hexdigest()
