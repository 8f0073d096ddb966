"""Persisted operations of the GraphQL door (options:
:class:`~meshflow.spec.persisted.PersistedQueries`).

A request's ``extensions.persistedQuery`` (``{"version": 1, "sha256Hash": "<64 hex>"}``) is
turned into the query text to run, or into a coded refusal, before the text is parsed; every
bound is checked before the work it bounds (the hash's shape before a lookup, the text's size
before hashing it). The :class:`~meshflow.gateway.guards.QueryGuard` calls :meth:`resolve` and,
once the text passed its limits and validation, :meth:`register`.

Codes (``extensions.code``):

- ``PERSISTED_QUERY_NOT_FOUND`` (message ``PersistedQueryNotFound``, as Apollo Server's, so
  Apollo Client's persisted query link sends the text): a hash without a text, unknown.
- ``PERSISTED_QUERY_NOT_SUPPORTED`` (``PersistedQueryNotSupported``): a hash with
  ``mode='off'``.
- ``PERSISTED_QUERY_HASH_MISMATCH`` (``provided sha does not match query``): a text whose
  sha256 is not the hash sent with it; nothing runs, nothing is stored.
- ``PERSISTED_QUERY_INVALID``: ``persistedQuery`` not an object, a version other than 1, a
  hash that is not 64 lowercase hex digits.
- ``PERSISTED_QUERY_NOT_IN_SAFELIST``: ``mode='safelist'`` and an operation not in the
  manifest (by hash or by text).
- ``QUERY_TOO_LARGE``: a text over ``GraphQLLimits.max_query_bytes``, before it is hashed.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError

from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import SHA256_HEX, PersistedQueries, read_manifest, sha256_hex

NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
HASH_MISMATCH = "PERSISTED_QUERY_HASH_MISMATCH"
INVALID = "PERSISTED_QUERY_INVALID"
NOT_IN_SAFELIST = "PERSISTED_QUERY_NOT_IN_SAFELIST"
PROTOCOL_STEPS = frozenset({NOT_FOUND})
"""Codes that are a step of the protocol, not a client's mistake (no tarpit strike)."""


def _coded(message: str, code: str) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code})


class PersistedQueryStore:
    """Registered query texts by sha256, the least recently used dropped first, bounded by
    the number of texts and by their total size in bytes."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._texts: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def size(self) -> int:
        """The bytes of the texts held."""
        return self._bytes

    def get(self, digest: str) -> str | None:
        text = self._texts.get(digest)
        if text is not None:
            self._texts.move_to_end(digest)
        return text

    def put(self, digest: str, text: str) -> None:
        """Keep ``text`` (whose sha256 the caller checked); a text larger than the whole
        store is not kept."""
        size = len(text.encode())
        if size > self.max_bytes:
            return
        old = self._texts.pop(digest, None)
        if old is not None:
            self._bytes -= len(old.encode())
        self._texts[digest] = text
        self._bytes += size
        while len(self._texts) > self.max_entries or self._bytes > self.max_bytes:
            _, dropped = self._texts.popitem(last=False)
            self._bytes -= len(dropped.encode())


@dataclass(frozen=True)
class Resolved:
    """The text a request runs; ``register``: the hash to store it under once it passed the
    guards (an APQ registration), else None."""

    query: str | None
    register: str | None = None


class PersistedOperations:
    """What the GraphQL door does with ``extensions.persistedQuery`` under ``options``."""

    def __init__(self, options: PersistedQueries, limits: GraphQLLimits) -> None:
        self.options = options
        self.limits = limits
        self.store = PersistedQueryStore(
            max_entries=options.max_entries, max_bytes=options.max_bytes
        )
        self.safelist: Mapping[str, str] | None = None
        if options.mode == "safelist":
            assert options.manifest is not None
            self.safelist = read_manifest(options.manifest)

    def resolve(self, query: str | None, extensions: Mapping[str, Any] | None) -> Resolved:
        """The text to run for a request's ``query`` and ``extensions``; raises a coded
        GraphQLError for a refusal."""
        persisted = (extensions or {}).get("persistedQuery")
        if persisted is None:
            if self.safelist is None or query is None:
                return Resolved(query)  # a missing query is Strawberry's to refuse
            self._check_size(query)
            if sha256_hex(query) not in self.safelist:
                raise self._not_in_safelist()
            return Resolved(query)
        if self.options.mode == "off":
            raise _coded("PersistedQueryNotSupported", NOT_SUPPORTED)
        digest = _digest(persisted)
        if query is not None:
            self._check_size(query)
            if not hmac.compare_digest(sha256_hex(query), digest):
                raise _coded(
                    "provided sha does not match query: extensions.persistedQuery.sha256Hash "
                    "must be the sha256 (hex) of the query text in UTF-8",
                    HASH_MISMATCH,
                )
        if self.safelist is not None:
            text = self.safelist.get(digest)
            if text is None:
                raise self._not_in_safelist()
            return Resolved(text)
        if query is not None:
            known = self.store.get(digest) is not None
            return Resolved(query, register=None if known else digest)
        text = self.store.get(digest)
        if text is None:
            raise _coded("PersistedQueryNotFound", NOT_FOUND)
        return Resolved(text)

    def register(self, digest: str, query: str) -> None:
        """Store a text that passed the guards and validation."""
        self.store.put(digest, query)

    def _check_size(self, query: str) -> None:
        limit = self.limits.max_query_bytes
        if len(query) > limit or len(query.encode()) > limit:
            raise _coded(
                f"the query text is larger than {limit} bytes "
                "(GraphQLLimits.max_query_bytes): send documents as variables",
                "QUERY_TOO_LARGE",
            )

    @staticmethod
    def _not_in_safelist() -> GraphQLError:
        return _coded(
            "this gateway runs only the operations of its persisted query manifest "
            "(PersistedQueries mode 'safelist'); add the operation to the manifest and deploy it",
            NOT_IN_SAFELIST,
        )


def _digest(persisted: Any) -> str:
    """The sha256 of a well-formed ``persistedQuery`` extension."""
    if not isinstance(persisted, Mapping):
        raise _coded("extensions.persistedQuery must be an object", INVALID)
    version = persisted.get("version")
    if version != 1 or isinstance(version, bool):
        raise _coded(
            f"Unsupported persisted query version {version!r}: the gateway reads version 1",
            INVALID,
        )
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
        raise _coded(
            "extensions.persistedQuery.sha256Hash must be 64 lowercase hex digits "
            "(the sha256 of the query text)",
            INVALID,
        )
    return digest
