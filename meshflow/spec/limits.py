"""Limits of the gateway's GraphQL door, part of a Flow's spec."""

from __future__ import annotations

from dataclasses import dataclass, fields

from meshflow.errors import ConfigError
from meshflow.types import DEFAULT_MAX_BATCHES, DEFAULT_MAX_DOCS


@dataclass(frozen=True, kw_only=True)
class GraphQLLimits:
    """Limits of the GraphQL door, each checked before the work it bounds is done.

    Args:
        max_depth: levels of nested fields in a query (fragments expanded).
        max_aliases: aliases in a query (fragments expanded).
        max_fields: fields in a query with its fragments expanded.
        max_tokens: tokens of the query text (checked while parsing).
        max_query_bytes: size of the query text (checked before parsing).
        max_header_bytes: size of an HTTP request's head: request line and headers (checked
            while reading it, before authentication).
        max_body_bytes: size of an HTTP request body or WebSocket message (checked while
            reading it, after authentication). Decoding JSON costs up to ~30 bytes of memory
            per byte of text (a list per ``[]``), so this bounds memory too.
        max_docs: documents in one operation, over all its fields, aliases and stream
            batches together (and in one ``POST /post``).
        max_batches: batches of one ``stream`` subscription.
        refusals_per_second: queries one client address may have refused each second, after
            a first ``refusal_burst``; past that its requests wait their turn (429 with
            ``Retry-After`` when the wait would pass 5 s). Clients never refused never wait.
        refusal_burst: refusals one client address may have at once.
        max_answer_bytes: bytes of document fields written into the answer of one GraphQL
            ``post`` or query field (each pushed ``stream`` answer on its own), every alias
            and selection of a field counted, as each writes all of it: strings by their
            length, arrays at 8 bytes a value, tags by their encoded size. Past it, the
            field's error ``ANSWER_TOO_LARGE``.
        max_head_seconds: time to send an HTTP request's head from its first byte (or from
            the connection's opening), or a WebSocket's ``connection_init``: past it the
            connection is closed (408), so idle or trickling connections do not pile up.
        max_body_seconds: time to send an HTTP request's body. Bodies are read before the
            request takes a slot of the gateway's admission, and the bodies being read at
            once hold at most 4 x ``max_body_bytes`` (past that: 503 ``OVERLOADED``), so a
            slow sender holds neither a slot nor memory for long.
    """

    max_depth: int = 10
    max_aliases: int = 15
    max_fields: int = 1000
    max_tokens: int = 2000
    max_query_bytes: int = 64 * 1024
    max_header_bytes: int = 32 * 1024
    max_body_bytes: int = 16 * 1024 * 1024
    max_docs: int = DEFAULT_MAX_DOCS
    max_batches: int = DEFAULT_MAX_BATCHES
    refusals_per_second: int = 2
    refusal_burst: int = 20
    max_answer_bytes: int = 16 * 1024 * 1024
    max_head_seconds: int = 10
    max_body_seconds: int = 30

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GraphQLLimits.{spec.name} must be a whole number >= 1")
