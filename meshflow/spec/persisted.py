"""Persisted operations of the GraphQL door, part of a Flow's spec: Apollo's automatic
persisted queries (``'auto'``), a safelist read from a persisted query manifest
(``'safelist'``), or neither (``'off'``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Literal

from meshflow.errors import ConfigError

PersistedMode = Literal["auto", "safelist", "off"]
MODES = ("auto", "safelist", "off")
MANIFEST_FORMAT = "apollo-persisted-query-manifest"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_MANIFEST_BYTES = 64 << 20
"""The largest manifest read: a safelist of that size holds tens of thousands of operations."""


@dataclass(frozen=True, kw_only=True)
class PersistedQueries:
    """How the GraphQL door treats ``extensions.persistedQuery`` (Apollo's protocol).

    - ``'auto'`` (the default): automatic persisted queries. A request may carry only the
      sha256 of its query; an unknown hash is answered ``PERSISTED_QUERY_NOT_FOUND`` and the
      client sends hash and text once, which registers the text (after the guards of
      :class:`~meshflow.GraphQLLimits` and validation pass). Full query texts still run.
    - ``'safelist'``: only the operations of ``manifest`` run (by hash, or by a text whose
      sha256 is in it); anything else is refused with ``PERSISTED_QUERY_NOT_IN_SAFELIST``
      before it is parsed, and nothing is registered.
    - ``'off'``: full query texts only; a hash is answered ``PERSISTED_QUERY_NOT_SUPPORTED``
      (Apollo Client then stops sending hashes).

    Args:
        mode: ``'auto'``, ``'safelist'`` or ``'off'``.
        manifest: with ``'safelist'``, the path of an Apollo persisted query manifest
            (``{"format": "apollo-persisted-query-manifest", "version": 1, "operations":
            [{"id", "body", "name", "type"}]}``); each ``id`` must be the sha256 (hex) of its
            ``body``, as Apollo's generator writes it by default.
        max_entries: registered texts kept (``'auto'``), the least recently used dropped.
        max_bytes: their total size in bytes.
        cache_control: the ``Cache-Control`` header of a successful answer to a persisted
            query sent with HTTP GET (e.g. ``'public, max-age=60'``, or ``'private, ...'``
            with auth on); None: no header. Refused GETs always get ``no-store``.

    Example::

        Flow(persisted_queries={'mode': 'safelist', 'manifest': 'persisted-queries.json'})
    """

    mode: PersistedMode = "auto"
    manifest: str | None = None
    max_entries: int = 1000
    max_bytes: int = 4 << 20
    cache_control: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"PersistedQueries.mode must be one of {', '.join(MODES)}, not {self.mode!r}"
            )
        if (self.mode == "safelist") != (self.manifest is not None):
            raise ConfigError(
                "PersistedQueries: mode='safelist' needs manifest= (the path of a persisted "
                "query manifest), and only that mode takes one"
            )
        if self.manifest is not None and not isinstance(self.manifest, str):
            raise ConfigError(f"PersistedQueries.manifest must be a path, not {self.manifest!r}")
        for name in ("max_entries", "max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"PersistedQueries.{name} must be a whole number >= 1")
        cache = self.cache_control
        if cache is not None and (
            not isinstance(cache, str) or not cache.strip() or not cache.isprintable()
        ):
            raise ConfigError(
                "PersistedQueries.cache_control must be a Cache-Control value such as "
                f"'public, max-age=60', not {cache!r}"
            )


def sha256_hex(text: str) -> str:
    """The hex sha256 of ``text`` in UTF-8: the hash Apollo's clients send."""
    return hashlib.sha256(text.encode()).hexdigest()


def read_manifest(path: str) -> dict[str, str]:
    """The operations of an Apollo persisted query manifest, sha256 -> body; ConfigError
    naming the file and the entry for anything else."""
    try:
        if os.path.getsize(path) > MAX_MANIFEST_BYTES:
            raise ConfigError(f"persisted query manifest {path!r} is over 64 MiB")
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ConfigError(f"persisted query manifest {path!r}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"persisted query manifest {path!r} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ConfigError(
            f"persisted query manifest {path!r}: expected an object with "
            f'"format": "{MANIFEST_FORMAT}"'
        )
    if data.get("version") != 1:
        raise ConfigError(f"persisted query manifest {path!r}: only version 1 is read")
    operations = data.get("operations")
    if not isinstance(operations, list):
        raise ConfigError(f'persisted query manifest {path!r}: "operations" must be a list')
    found: dict[str, str] = {}
    for i, op in enumerate(operations):
        where = f"persisted query manifest {path!r}, operations[{i}]"
        if not isinstance(op, dict) or not isinstance(op.get("body"), str):
            raise ConfigError(f'{where}: expected an object with a string "body"')
        body = op["body"]
        digest = sha256_hex(body)
        if op.get("id") != digest:
            raise ConfigError(
                f'{where}: "id" must be the sha256 of "body" ({digest}); regenerate the '
                "manifest with the default operation ids"
            )
        found[digest] = body
    return found
