"""REST ``POST /post`` for curl users, and the JSON error answers every HTTP route shares.

``/post`` takes ``{"on", "docs", "parameters", "targetExecutor", "fields"}`` and runs the
same :func:`~meshflow.gateway.post.run_post` as the GraphQL ``post`` mutation, without
GraphQL: a failure is answered with its class's ``http_status`` and, in
``errors[0].extensions.code``, its ``graphql_code`` (the code GraphQL callers see too).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshflow.document.proto import results_to_dict, struct_to_dict
from meshflow.errors import (
    BadRequestError,
    ForbiddenError,
    OverloadedError,
    RequestError,
    UnauthenticatedError,
)
from meshflow.gateway.post import ArrayInput, DocumentInput, array_values, check_count, run_post
from meshflow.gateway.server import Gateway
from meshflow.identity import Identity
from meshflow.proto.v1 import document_pb2
from meshflow.spec.limits import GraphQLLimits

_POST_KEYS = frozenset({"on", "docs", "parameters", "targetExecutor", "fields"})
_POST_BODY = (
    'it takes "on" (the endpoint), and optionally "docs", "parameters", "targetExecutor" '
    'and "fields"'
)
_DOC_KEYS = frozenset(
    {"id", "parentId", "text", "blob", "uri", "mimeType", "tags", "tensor", "embedding"}
)
_DOC_STRINGS = ("id", "parentId", "text", "blob", "uri", "mimeType")


def post_route(gateway: Gateway, limits: GraphQLLimits) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of ``POST /post``."""

    async def post(request: Request) -> Response:
        # JSON only: a cross-site page can send text/plain or a form without asking (no
        # CORS preflight), never application/json.
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return coded(
                415, "POST /post takes application/json bodies only", "UNSUPPORTED_MEDIA_TYPE"
            )
        try:
            body = decode_json(await request.body())
        except json.JSONDecodeError as exc:
            return coded(400, f"the body is not valid JSON: {exc.msg}", "BAD_REQUEST")
        if not isinstance(body, dict):
            return coded(400, f"the body must be a JSON object: {_POST_BODY}", "BAD_REQUEST")
        identity = request.scope.get("state", {}).get("meshflow_identity")
        try:
            answer = await run_post(
                gateway,
                identity=identity,
                door="http",
                max_docs=limits.max_docs,
                **_post_arguments(body, gateway, identity, limits.max_docs),
            )
        except RequestError as exc:
            return error_response(exc)
        return JSONResponse(
            {
                "requestId": answer.header.request_id,
                "docs": [doc_json(d) for d in answer.docs],
                "results": results_to_dict(answer.results),
            }
        )

    return post


def _post_arguments(
    body: dict[str, Any], gateway: Gateway, identity: Identity | None, max_docs: int
) -> dict[str, Any]:
    """The arguments of :func:`run_post` in a ``/post`` body, checked in the order a caller
    is best told: the body's keys, the caller's scope, then the documents (a refused caller
    costs no conversion of its documents)."""
    unknown = sorted(set(body) - _POST_KEYS)
    if unknown:
        raise BadRequestError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in the body; {_POST_BODY}"
        )
    on = body.get("on")
    if not isinstance(on, str):
        raise BadRequestError(f'"on" must be a string; {_POST_BODY}')
    gateway.authorize(identity, on, "http")
    docs = body.get("docs") or []
    fields = body.get("fields") or []
    if not isinstance(docs, list) or not isinstance(fields, list):
        raise BadRequestError('"docs" and "fields" must be lists')
    check_count(len(docs), max_docs)
    target = body.get("targetExecutor")
    if target is not None and not isinstance(target, str):
        raise BadRequestError(f'"targetExecutor" must be a string; {_POST_BODY}')
    return {
        "on": on,
        "docs": [_doc_input(d, i) for i, d in enumerate(docs)],
        "parameters": body.get("parameters"),
        "target_executor": target,
        "fields": [str(f) for f in fields],
    }


def _doc_input(raw: Any, i: int) -> DocumentInput:
    if not isinstance(raw, dict):
        raise BadRequestError(f"docs[{i}] must be a JSON object")
    unknown = set(raw) - _DOC_KEYS
    if unknown:
        raise BadRequestError(f"docs[{i}] has unknown field(s) {', '.join(sorted(unknown))}")
    for key in _DOC_STRINGS:
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise BadRequestError(f"docs[{i}].{key} must be a string")
    arrays = {}
    for name in ("tensor", "embedding"):
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            value = {"data": value}
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("data"), list)
            or not isinstance(value.get("shape", []), list | None)
            or not isinstance(value.get("dtype", ""), str)
        ):
            raise BadRequestError(
                f"docs[{i}].{name} must be a list of numbers or {{data, shape, dtype}} (a list"
                " of numbers, a list of sizes, a string)"
            )
        arrays[name] = ArrayInput(
            data=value["data"], shape=value.get("shape"), dtype=value.get("dtype", "float32")
        )
    return DocumentInput(
        id=raw.get("id"),
        parent_id=raw.get("parentId"),
        text=raw.get("text"),
        blob=raw.get("blob"),
        uri=raw.get("uri"),
        mime_type=raw.get("mimeType"),
        tags=raw.get("tags"),
        **arrays,
    )


def doc_json(doc: document_pb2.Document) -> dict[str, Any]:
    """An answer's Document as plain JSON, every field that is set."""
    out: dict[str, Any] = {"id": doc.id}
    for name, key in (("parent_id", "parentId"), ("text", "text"), ("uri", "uri")):
        value = getattr(doc, name)
        if value:
            out[key] = value
    if doc.mime_type:
        out["mimeType"] = doc.mime_type
    if doc.blob:
        out["blob"] = base64.b64encode(doc.blob).decode("ascii")
    for name in ("tensor", "embedding"):
        if doc.HasField(name):
            array = getattr(doc, name)
            out[name] = {
                "data": array_values(array),
                "shape": list(array.shape),
                "dtype": array.dtype,
            }
    if doc.HasField("tags"):
        out["tags"] = struct_to_dict(doc.tags)
    if doc.scores:
        out["scores"] = dict(doc.scores)
    if doc.matches:
        out["matches"] = [doc_json(m) for m in doc.matches]
    if doc.chunks:
        out["chunks"] = [doc_json(c) for c in doc.chunks]
    return out


def error_response(exc: RequestError) -> JSONResponse:
    """The HTTP answer to a failed request: its class's status and code, and for a refused
    token (401) or scope (403) the ``WWW-Authenticate`` challenge RFC 6750 asks for."""
    response = JSONResponse(
        {"errors": [{"message": str(exc), "extensions": exc.extensions()}]},
        status_code=exc.http_status,
    )
    if isinstance(exc, ForbiddenError):
        challenge = 'Bearer realm="meshflow", error="insufficient_scope"'
        if exc.scope:
            challenge += f', scope="{exc.scope}"'
        response.headers["WWW-Authenticate"] = challenge
    elif isinstance(exc, UnauthenticatedError):
        challenge = 'Bearer realm="meshflow"'
        if str(exc) != "no token":
            description = str(exc).replace('"', "'").replace("\\", "")
            challenge += f', error="invalid_token", error_description="{description}"'
        response.headers["WWW-Authenticate"] = challenge
    elif isinstance(exc, OverloadedError):
        response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response


def coded(status: int, message: str, code: str) -> JSONResponse:
    """An HTTP refusal that is no request's failure (not JSON, too large, no such route)."""
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status
    )


def decode_json(data: str | bytes) -> Any:
    """Parse JSON that came from the network.

    Raises:
        json.JSONDecodeError: not UTF-8, not JSON, or nested past what the parser takes.
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError(f"not UTF-8 ({exc.reason})", "", exc.start) from None
    try:
        return json.loads(data)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # an integer past Python's 4,300 digits
        raise json.JSONDecodeError(str(exc), "", 0) from None
