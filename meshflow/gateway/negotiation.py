"""Content negotiation of the GraphQL door, per the GraphQL-over-HTTP specification: which
media type an answer is written in, and which HTTP status it gets in that media type.

- ``application/graphql-response+json; charset=utf-8`` when the client's ``Accept`` prefers
  it: a request error gets a 4xx (or 5xx) status and no ``data`` entry;
- ``application/json`` otherwise (``application/json``, ``*/*``, no ``Accept``, or nothing
  the door serves): every GraphQL answer is 200 with its ``data`` (null on a request error),
  as for clients older than the specification.

A *request error* is an answer that failed before execution: the query did not parse, did not
validate (the guards' limits included), named no operation that exists, or its variables did
not coerce. Its status is its code's (:mod:`meshflow.errors`: ``FORBIDDEN`` 403,
``TOO_MANY_DOCUMENTS`` 413, ...), 400 for the codes of no error class. Errors raised while
executing (a resolver's, an executor's) carry a ``path``: the answer has its ``data`` (maybe
null) and stays 200 in both media types. Refusals made before the GraphQL request is read
(malformed JSON, no query, a refused token) keep their 4xx in both.
"""

from __future__ import annotations

from collections.abc import Sequence

from graphql import GraphQLError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from meshflow.errors import for_graphql_code

GRAPHQL_RESPONSE = "application/graphql-response+json"
"""The specification's media type: its status codes can be trusted (4xx: not executed)."""
JSON = "application/json"
"""The legacy media type: every GraphQL answer is 200, whatever failed."""
GRAPHQL_RESPONSE_CONTENT_TYPE = f"{GRAPHQL_RESPONSE}; charset=utf-8"


def negotiate(accept: str | None) -> str:
    """The media type of the answer to a request whose ``Accept`` header is ``accept``.

    ``application/graphql-response+json`` when the client ranks it above ``application/json``
    (by ``q``) or names both at the same ``q``; ``application/json`` otherwise: with no header,
    with ``*/*`` or ``application/*`` alone (the specification's legacy default), and when the
    client accepts neither (answered anyway rather than refused with 406, for older clients).

    >>> negotiate("application/graphql-response+json, application/json;q=0.9")
    'application/graphql-response+json'
    >>> negotiate("*/*")
    'application/json'
    """
    if not accept:
        return JSON
    ranges = _ranges(accept)
    q_new, exact_new = _quality(ranges, GRAPHQL_RESPONSE)
    q_old, _ = _quality(ranges, JSON)
    if q_new > 0 and (q_new > q_old or (q_new == q_old and exact_new)):
        return GRAPHQL_RESPONSE
    return JSON


def _ranges(accept: str) -> list[tuple[str, float]]:
    """The media ranges of an ``Accept`` header with their ``q`` (malformed ``q``: 0)."""
    ranges = []
    for part in accept.split(",")[:64]:  # a header is bounded; its list needs no more
        media, *params = part.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges.append((media.strip().lower(), q))
    return ranges


def _quality(ranges: list[tuple[str, float]], media_type: str) -> tuple[float, bool]:
    """The ``q`` of the most specific range matching ``media_type``, and whether that range
    names it exactly (RFC 9110, 12.5.1)."""
    kind = media_type.split("/")[0]
    best: tuple[int, float] = (-1, 0.0)
    for media, q in ranges:
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media, -1)
        if specificity > best[0]:
            best = (specificity, q)
    return best[1], best[0] == 2


def is_request_error(result: ExecutionResult) -> bool:
    """Whether ``result`` failed before execution: no ``data`` was ever made.

    Strawberry marks parse and validation failures; variables that do not coerce (and an
    operation name that matches nothing) come back from graphql-core's ``execute`` without
    data and with errors that have no ``path``, where every field error has one."""
    if isinstance(result, PreExecutionError):
        return True
    errors = result.errors or ()
    return result.data is None and bool(errors) and all(e.path is None for e in errors)


def request_error_status(errors: Sequence[GraphQLError]) -> int:
    """The HTTP status of a request error under ``application/graphql-response+json``: the
    status of the first error's code, 400 for a code of no error class (parse, validation,
    the guards' limits)."""
    code = (errors[0].extensions or {}).get("code") if errors else None
    cls = for_graphql_code(code) if isinstance(code, str) else None
    return cls.http_status if cls is not None else 400
