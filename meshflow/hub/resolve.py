"""From a ``hub://`` reference to one exact wheel: the newest version the reference allows, its
file fetched (hash checked) and its executor metadata read.

When the index cannot be read, the wheels the cache already holds stand in for it (with a
warning): a Flow whose environments are built starts offline.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from dataclasses import dataclass

from packaging import tags
from packaging.utils import parse_wheel_filename

from meshflow.hub.errors import (
    HashMismatchError,
    HubUnreachableError,
    UnknownExecutorError,
    VersionNotFoundError,
)
from meshflow.hub.index import DistFile, Hub, cached_files, fetch, remember
from meshflow.hub.metadata import ExecutorMetadata, read_wheel, sha256_file
from meshflow.hub.reference import HubRef

log = logging.getLogger("meshflow.hub")


@dataclass(frozen=True)
class Resolved:
    """A reference resolved to one wheel, on disk."""

    ref: HubRef
    file: DistFile
    wheel: str
    metadata: ExecutorMetadata
    offline: bool = False

    @property
    def sha256(self) -> str:
        assert self.file.sha256 is not None
        return self.file.sha256

    @property
    def pinned_ref(self) -> str:
        """The reference that names exactly this wheel (what a lock file records)."""
        return f"hub://{self.file.project}@{self.file.version}#sha256={self.sha256}"


def available(ref: HubRef, hub: Hub, cache_dir: str) -> tuple[list[DistFile], bool]:
    """The wheels of ``ref``'s project, from the index or (unreachable) from the cache."""
    try:
        return hub.files(ref.name), False
    except HubUnreachableError as exc:
        cached = cached_files(ref.name, cache_dir)
        if not cached:
            raise
        log.warning("%s; using the %d cached wheel(s) of %s", exc, len(cached), ref.name)
        return cached, True


def resolve(ref: HubRef, hub: Hub, cache_dir: str) -> Resolved:
    """The one wheel ``ref`` names in ``hub``; errors say what exists instead."""
    files, offline = available(ref, hub, cache_dir)
    if not files:
        raise _unknown(ref, hub)
    versions = sorted({f.version for f in files})
    chosen = sorted(ref.specifier.filter(versions), reverse=True)
    if not chosen:
        raise VersionNotFoundError(
            f"{ref}: no version of {ref.name} matches {str(ref.specifier) or 'any'}; the hub "
            f"{hub.location} has {', '.join(str(v) for v in reversed(versions))}"
        )
    file = _best_file([f for f in files if f.version == chosen[0]], ref)
    if ref.sha256 is not None:
        if file.sha256 is not None and file.sha256 != ref.sha256:
            raise HashMismatchError(
                f"{ref}: the index lists {file.filename} with sha256 {file.sha256}, the lock "
                f"file recorded {ref.sha256}; the published file changed: re-lock with "
                "`meshflow hub lock` if that is expected"
            )
        file = dataclasses.replace(file, sha256=ref.sha256)
    path = fetch(file, cache_dir)
    if file.sha256 is None:
        file = dataclasses.replace(file, sha256=sha256_file(path))
    if path.startswith(hub.location):
        remember(path, file, cache_dir)
    return Resolved(ref, file, path, read_wheel(path), offline)


def _best_file(files: list[DistFile], ref: HubRef) -> DistFile:
    """The wheel of one version that this interpreter can install (the most specific tag)."""
    supported = {str(t): i for i, t in enumerate(tags.sys_tags())}

    def rank(f: DistFile) -> int:
        _, _, _, file_tags = parse_wheel_filename(f.filename)
        return min((supported.get(str(t), 1 << 30) for t in file_tags), default=1 << 30)

    best = min(files, key=rank)
    if rank(best) == 1 << 30:
        raise VersionNotFoundError(
            f"{ref}: no wheel of {best.project} {best.version} installs on this Python "
            f"({next(iter(tags.sys_tags()))}); its files: {', '.join(f.filename for f in files)}"
        )
    return best


def _unknown(ref: HubRef, hub: Hub) -> UnknownExecutorError:
    try:
        names = hub.projects()
    except HubUnreachableError:
        names = []
    close = difflib.get_close_matches(ref.name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    known = f" (it has {len(names)} project(s): `meshflow hub list` shows them)" if names else ""
    return UnknownExecutorError(
        f"{ref}: the hub {hub.location} has no executor named {ref.name!r}{hint}{known}"
    )
