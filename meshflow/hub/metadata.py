"""What a hub executor says about itself: ``meshflow-executor.json``, inside its package.

The file sits next to the package's ``__init__.py`` (so that it ships in the wheel as package
data, whatever build backend made the wheel)::

    {"name": "echo-exec", "version": "1.0.0", "description": "...",
     "executor": "echo_exec.executor:EchoExec",
     "requirements": ["tinylib==1.0"],
     "models": [{"path": "echo_exec/models/weights.bin", "sha256": "..."}],
     "state_scope": "none"}

``name``, ``version``, ``description`` and ``requirements`` are copied from the project's
``pyproject.toml`` when it is built (:func:`meshflow.hub.project.build`), and the models'
hashes computed then; a wheel whose file disagrees with its own ``METADATA`` is refused.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name

from meshflow.errors import ConfigError
from meshflow.hub.errors import MissingMetadataError

METADATA_FILE = "meshflow-executor.json"
_IN_WHEEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*/" + re.escape(METADATA_FILE) + "$")


@dataclass(frozen=True)
class ModelFile:
    """A model file an executor ships: its path in the wheel and its sha256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ExecutorMetadata:
    """The content of ``meshflow-executor.json``."""

    name: str
    version: str
    executor: str
    """``'package.module:Class'``: what ``meshflow executor --uses`` imports."""
    description: str = ""
    requirements: tuple[str, ...] = ()
    models: tuple[ModelFile, ...] = ()
    state_scope: str = "none"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ExecutorMetadata:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: {METADATA_FILE} must hold a JSON object")
        missing = [k for k in ("name", "version", "executor") if not data.get(k)]
        if missing:
            raise ConfigError(f"{where}: {METADATA_FILE} lacks {', '.join(missing)}")
        executor = str(data["executor"])
        if ":" not in executor:
            raise ConfigError(
                f"{where}: 'executor' must be 'package.module:Class', got {executor!r}"
            )
        models = tuple(
            ModelFile(str(m["path"]), str(m.get("sha256", ""))) for m in data.get("models") or ()
        )
        known = {"name", "version", "executor", "description", "requirements", "models"}
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            executor=executor,
            description=str(data.get("description") or ""),
            requirements=tuple(str(r) for r in data.get("requirements") or ()),
            models=models,
            state_scope=str(data.get("state_scope") or "none"),
            extra={k: v for k, v in data.items() if k not in known | {"state_scope"}},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "executor": self.executor,
            "requirements": list(self.requirements),
            "models": [{"path": m.path, "sha256": m.sha256} for m in self.models],
            "state_scope": self.state_scope,
            **self.extra,
        }


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_wheel(path: str) -> ExecutorMetadata:
    """The executor metadata of the wheel at ``path``; MissingMetadataError when it has none,
    ConfigError when it disagrees with the wheel's own METADATA (name, version)."""
    where = path.rsplit("/", 1)[-1]
    try:
        with zipfile.ZipFile(path) as wheel:
            names = wheel.namelist()
            found = [n for n in names if _IN_WHEEL.match(n)]
            if not found:
                raise MissingMetadataError(
                    f"{where} is not a meshflow executor: it has no <package>/{METADATA_FILE}; "
                    "scaffold one with `meshflow hub new NAME` or add the file as package data"
                )
            data = json.loads(wheel.read(found[0]))
            meta = ExecutorMetadata.from_dict(data, where)
            dist_meta = [n for n in names if re.match(r"^[^/]+\.dist-info/METADATA$", n)]
            if dist_meta:
                headers = email.parser.Parser().parsestr(wheel.read(dist_meta[0]).decode())
                _agree(meta, headers.get("Name", ""), headers.get("Version", ""), where)
                requires = tuple(headers.get_all("Requires-Dist") or ())
                if requires != meta.requirements:
                    # the wheel's METADATA is what installers read: it wins
                    meta = ExecutorMetadata(**{**meta.__dict__, "requirements": requires})
            return meta
    except zipfile.BadZipFile:
        raise ConfigError(f"{where} is not a wheel (not a zip file)") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {METADATA_FILE} is not valid JSON: {exc}") from None


def _agree(meta: ExecutorMetadata, name: str, version: str, where: str) -> None:
    if canonicalize_name(name) != canonicalize_name(meta.name) or version != meta.version:
        raise ConfigError(
            f"{where}: {METADATA_FILE} says {meta.name} {meta.version} but the wheel is "
            f"{name} {version}; rebuild it with `meshflow hub push PROJECT_DIR`"
        )
