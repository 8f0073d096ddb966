"""Speaking GraphQL to a Flow's gateway: ``Client(protocol='graphql')``.

``post`` sends one ``post`` mutation per request over HTTP; several requests go as one
``stream`` subscription over a WebSocket (graphql-transport-ws), answers put back in order.
Every document field is selected, so documents come back whole.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from meshflow.client.messages import Response
from meshflow.document import Document, DocumentArray
from meshflow.errors import (
    BadRequestError,
    DeadlineExceeded,
    ExecutorError,
    ForbiddenError,
    RequestError,
    UnauthenticatedError,
    UnavailableError,
    for_graphql_code,
)
from meshflow.types import DEFAULT_MAX_BATCHES, DEFAULT_MAX_DOCS
from meshflow.wire import TIMEOUT_HEADER

_ARRAY = "{ data shape dtype }"
_DOC = f"id parentId text blob uri mimeType tags scores tensor {_ARRAY} embedding {_ARRAY}"
_FIELDS = f"{_DOC} matches {{ {_DOC} }} chunks {{ {_DOC} }}"
_RESPONSE = f"requestId results batch docs {{ {_FIELDS} }}"
POST = (
    "mutation($on: String!, $docs: [DocumentInput!], $parameters: JSON, $target: String) "
    f"{{ post(on: $on, docs: $docs, parameters: $parameters, targetExecutor: $target) "
    f"{{ {_RESPONSE} }} }}"
)
STREAM = (
    "subscription($on: String!, $batches: [[DocumentInput!]!]!, $parameters: JSON, "
    "$target: String, $inFlight: Int!) { stream(on: $on, batches: $batches, "
    "parameters: $parameters, targetExecutor: $target, maxInFlight: $inFlight) "
    f"{{ {_RESPONSE} }} }}"
)


def doc_input(doc: Document) -> dict[str, Any]:
    """A Document as a GraphQL ``DocumentInput``."""
    out: dict[str, Any] = {"id": doc.id}
    for name, key in (("parent_id", "parentId"), ("text", "text"), ("uri", "uri")):
        if getattr(doc, name):
            out[key] = getattr(doc, name)
    if doc.mime_type:
        out["mimeType"] = doc.mime_type
    if doc.blob:
        out["blob"] = base64.b64encode(doc.blob).decode("ascii")
    if doc.tags:
        out["tags"] = doc.tags
    for name in ("tensor", "embedding"):
        array = getattr(doc, name)
        if array is not None:
            out[name] = {
                "data": np.asarray(array, dtype=np.float64).ravel().tolist(),
                "shape": list(array.shape),
                "dtype": array.dtype.str,
            }
    return out


def doc_output(raw: dict[str, Any]) -> Document:
    """A GraphQL ``Document`` as a Document."""
    arrays = {}
    for name in ("tensor", "embedding"):
        value = raw.get(name)
        if value is not None:
            arrays[name] = np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(
                value["shape"]
            )
    return Document(
        id=raw["id"],
        parent_id=raw.get("parentId", ""),
        text=raw.get("text", ""),
        blob=base64.b64decode(raw.get("blob", "")),
        uri=raw.get("uri", ""),
        mime_type=raw.get("mimeType", ""),
        tags=raw.get("tags") or {},
        scores=raw.get("scores") or {},
        matches=[doc_output(m) for m in raw.get("matches", [])],
        chunks=[doc_output(c) for c in raw.get("chunks", [])],
        **arrays,
    )


def response(raw: dict[str, Any]) -> Response:
    return Response(
        request_id=raw["requestId"],
        docs=DocumentArray(doc_output(d) for d in raw["docs"]),
        results=raw.get("results") or {},
    )


# The gateway closes a WebSocket whose token or scope it refuses with 4000 + the HTTP status
# of the error (4401, 4403, as graphql-transport-ws servers do).
_CLOSED_FOR: dict[int, tuple[type[RequestError], str]] = {
    4000 + UnauthenticatedError.http_status: (
        UnauthenticatedError,
        "the gateway refused the token",
    ),
    4000 + ForbiddenError.http_status: (ForbiddenError, "the token lacks a scope"),
}


def _retry_after(answer: httpx.Response) -> float | None:
    """The seconds an overload refusal asks the client to wait, None for any other answer."""
    if answer.status_code not in (429, 503):
        return None
    value = answer.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def raise_errors(errors: Sequence[dict[str, Any]]) -> None:
    """Turn GraphQL errors into meshflow's exceptions (the class from ``extensions.code``;
    a code of the GraphQL guards, which no class has, is a :class:`BadRequestError`)."""
    error = errors[0]
    ext = error.get("extensions") or {}
    code = ext.get("code", "")
    message = error.get("message", "GraphQL error")
    kind = for_graphql_code(code)
    if kind is ExecutorError:
        raise ExecutorError(
            message,
            executor=ext.get("executor", ""),
            endpoint=ext.get("endpoint", ""),
            exception_type=ext.get("exceptionType", ""),
        )
    if kind is ForbiddenError:
        raise ForbiddenError(message, scope=ext.get("scope"))
    raise (kind or BadRequestError)(f"{message} ({code or 'no code'})")


def subscriptions(
    batches: list[list[Document]],
    max_docs: int = DEFAULT_MAX_DOCS,
    max_batches: int = DEFAULT_MAX_BATCHES,
) -> Iterator[tuple[int, list[list[Document]]]]:
    """(index of the first batch, batches) per ``stream`` subscription: the gateway takes at
    most ``max_docs`` documents and ``max_batches`` batches in one operation (its defaults)."""
    start, docs = 0, 0
    for i, batch in enumerate(batches):
        if i > start and (docs + len(batch) > max_docs or i - start >= max_batches):
            yield start, batches[start:i]
            start, docs = i, 0
        docs += len(batch)
    if start < len(batches):
        yield start, batches[start:]


class GraphQLSession:
    """The blocking GraphQL side of :class:`~meshflow.Client`."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float | None,
        max_in_flight: int,
        *,
        token: str | None = None,
        retries: int = 3,
    ) -> None:
        self.retries = retries
        self.url = f"http://{host}:{port}/graphql"
        self.ws_url = f"ws://{host}:{port}/graphql"
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._init: dict[str, str] = {}
        headers = {}
        if token is not None:
            headers["authorization"] = self._init["authorization"] = f"Bearer {token}"
        self._http = httpx.Client(timeout=timeout, headers=headers)

    def _post(self, payload: dict[str, Any], timeout: float | None) -> httpx.Response:
        """POST ``payload``; an overload refusal (503 or 429 with ``Retry-After``) is sent
        again after the wait it asks for, times a random 1 to 1.5, up to ``retries`` times
        and only while that wait fits ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise DeadlineExceeded(f"the request to {self.url} timed out")
            headers = {} if left is None else {TIMEOUT_HEADER: str(max(1, int(left * 1000)))}
            try:
                answer = self._http.post(self.url, json=payload, timeout=left, headers=headers)
            except httpx.TimeoutException:
                raise DeadlineExceeded(f"the request to {self.url} timed out") from None
            except httpx.TransportError as exc:
                raise UnavailableError(f"the gateway at {self.url} is unreachable: {exc}") from None
            wait = _retry_after(answer)
            if wait is None or attempt >= self.retries:
                return answer
            wait *= random.uniform(1.0, 1.5)
            if deadline is not None and time.monotonic() + wait >= deadline:
                return answer  # no time to wait for: the refusal is the answer
            time.sleep(wait)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def send(
        self,
        on: str,
        batches: list[list[Document]],
        parameters: dict[str, Any] | None,
        target_executor: str | None,
        timeout: float | None,
    ) -> list[Response]:
        variables: dict[str, Any] = {"on": on, "parameters": parameters, "target": target_executor}
        if len(batches) == 1:
            variables["docs"] = [doc_input(d) for d in batches[0]]
            answer = self._post({"query": POST, "variables": variables}, timeout or self.timeout)
            body: dict[str, Any] = (
                answer.json()
                if answer.headers.get("content-type", "").startswith("application/json")
                else {"errors": [{"message": answer.text}]}
            )
            if body.get("errors"):
                raise_errors(body["errors"])
            return [response(body["data"]["post"])]
        variables["inFlight"] = self.max_in_flight
        ordered: list[Response | None] = [None] * len(batches)
        for start, group in subscriptions(batches):
            variables["batches"] = [[doc_input(d) for d in batch] for batch in group]
            for raw in self._subscribe(STREAM, variables, timeout or self.timeout):
                ordered[start + raw["batch"]] = response(raw)
        return [r for r in ordered if r is not None]

    def _subscribe(
        self, query: str, variables: dict[str, Any], timeout: float | None
    ) -> Iterator[dict[str, Any]]:
        protocols = [Subprotocol("graphql-transport-ws")]
        with connect(self.ws_url, subprotocols=protocols, open_timeout=timeout) as ws:
            try:
                yield from self._exchange(ws, query, variables, timeout)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                refused = _CLOSED_FOR.get(code or 0)
                if refused is not None:
                    raise refused[0](reason or refused[1]) from None
                raise UnavailableError(
                    f"{self.ws_url} closed the GraphQL connection ({code} {reason})"
                ) from None

    def _exchange(
        self, ws: ClientConnection, query: str, variables: dict[str, Any], timeout: float | None
    ) -> Iterator[dict[str, Any]]:
        ws.send(json.dumps({"type": "connection_init", "payload": self._init}))
        if json.loads(ws.recv(timeout=timeout)).get("type") != "connection_ack":
            raise UnavailableError(f"{self.ws_url} refused the GraphQL connection")
        sub_id = uuid.uuid4().hex
        payload = {"query": query, "variables": variables}
        ws.send(json.dumps({"id": sub_id, "type": "subscribe", "payload": payload}))
        while True:
            message = json.loads(ws.recv(timeout=timeout))
            kind = message.get("type")
            if kind == "next":
                data = message["payload"]
                if data.get("errors"):
                    raise_errors(data["errors"])
                yield data["data"]["stream"]
            elif kind == "error":
                raise_errors(message["payload"])
            elif kind == "complete":
                return
            elif kind == "ping":
                ws.send(json.dumps({"type": "pong"}))
