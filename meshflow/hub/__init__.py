"""The executor hub: versioned executors published to a Python package index, each run in a
virtual environment of its own.

Use it from a Flow with ``uses='hub://NAME@VERSION'`` (or a PEP 440 specifier); make and
publish executors with ``meshflow hub new|push``. See ``docs/hub.md``.
"""

from __future__ import annotations

from meshflow.hub.errors import (
    EnvironmentBuildError,
    HashMismatchError,
    HubError,
    HubUnreachableError,
    MissingMetadataError,
    UnknownExecutorError,
    VersionNotFoundError,
)
from meshflow.hub.index import FolderHub, Hub, RemoteHub, open_hub
from meshflow.hub.metadata import ExecutorMetadata, read_wheel
from meshflow.hub.reference import HubRef

__all__ = [
    "EnvironmentBuildError",
    "ExecutorMetadata",
    "FolderHub",
    "HashMismatchError",
    "Hub",
    "HubError",
    "HubRef",
    "HubUnreachableError",
    "MissingMetadataError",
    "RemoteHub",
    "UnknownExecutorError",
    "VersionNotFoundError",
    "open_hub",
    "read_wheel",
]
