"""Building requests and reading answers: what every client protocol shares."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from meshflow.document import Document, DocumentArray
from meshflow.document.columnar import (
    COLUMNAR_MIN_DOCS,
    documents_from_request,
    request_bytes,
)
from meshflow.document.proto import dict_to_struct, results_to_dict, struct_to_dict
from meshflow.errors import (
    REFUSALS,
    BadRequestError,
    DeadlineExceeded,
    ExecutorError,
    ForbiddenError,
    OverloadedError,
    RequestError,
    UnavailableError,
    for_grpc_code,
    request_errors,
)
from meshflow.proto.v1 import data_request_pb2
from meshflow.wire import MISSING_SCOPE

Inputs = DocumentArray | Iterable[Document] | Document | None


@dataclass(frozen=True)
class Response:
    """The answer to one request: its documents and what executors returned as dicts."""

    request_id: str
    docs: DocumentArray
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def batches(inputs: Inputs, request_size: int) -> Iterator[list[Document]]:
    """Split ``inputs`` into lists of at most ``request_size`` documents (one empty list at
    least, so that a request without documents still runs the endpoint)."""
    if request_size < 1:
        raise ValueError(f"request_size must be at least 1, got {request_size}")
    if inputs is None:
        yield []
        return
    if isinstance(inputs, Document):
        yield [inputs]
        return
    batch: list[Document] = []
    sent = False
    for doc in inputs:
        if not isinstance(doc, Document):
            raise TypeError(f"inputs must be Documents, got {type(doc).__name__}")
        batch.append(doc)
        if len(batch) == request_size:
            yield batch
            sent = True
            batch = []
    if batch or not sent:
        yield batch


def build_request(
    on: str,
    docs: Iterable[Document],
    *,
    parameters: Mapping[str, Any] | None = None,
    target_executor: str | None = None,
    request_id: str | None = None,
    columnar: bool | None = None,
) -> tuple[str, bytes]:
    """Serialize one DataRequest; returns its request id and bytes.

    ``columnar``: the layout of the documents (see ``docs/wire.md``): True, the columnar
    layout (``DataRequest.columns``); False, the row layout (``DataRequest.docs``) that
    clients before it sent; None (default), columns for requests of
    :data:`~meshflow.document.columnar.COLUMNAR_MIN_DOCS` documents or more, rows for fewer
    (a lone document decodes faster from its own message). Executors answer in the layout
    they were sent.
    """
    request_id = request_id or uuid.uuid4().hex
    request = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(
            request_id=request_id, endpoint=on, target_executor=target_executor or ""
        )
    )
    if parameters:
        request.parameters.CopyFrom(dict_to_struct(dict(parameters)))
    if not isinstance(docs, DocumentArray):
        docs = DocumentArray._wrap(list(docs))
    if columnar is None:
        columnar = len(docs) >= COLUMNAR_MIN_DOCS
    return request_id, request_bytes(docs, request, columnar=columnar)


# A failure of the gateway itself (not of an executor) on a stream, by class name: a refusal,
# or an internal error (a plain RequestError naming the step where the gateway failed).
_GATEWAY_FAILURES: dict[str, type[RequestError]] = {
    cls.__name__: cls for cls in request_errors() if cls is not ExecutorError
}


def read_response(data: bytes) -> Response:
    """Parse an answer; raise :class:`ExecutorError` when it carries an error status."""
    answer = data_request_pb2.DataRequest.FromString(data)
    status = answer.status
    if status.code != data_request_pb2.Status.OK:
        refused = _GATEWAY_FAILURES.get(status.exception_type)
        if status.executor == "gateway" and refused is not None:
            # Refused on a stream, before any executor.
            if refused is ForbiddenError:
                scope = struct_to_dict(answer.results["gateway"]).get("missing_scope")
                raise ForbiddenError(status.message, scope=scope)
            raise refused(status.message)
        raise ExecutorError(
            status.message,
            executor=status.executor,
            endpoint=status.endpoint,
            exception_type=status.exception_type,
        )
    return Response(
        request_id=answer.header.request_id,
        docs=documents_from_request(answer),
        results=results_to_dict(answer.results),
    )


def request_id_of(data: bytes) -> str:
    return data_request_pb2.DataRequestHead.FromString(data).header.request_id


# How the client words a status the gateway answered with (``details`` is the gateway's own
# message); which error it is comes from the status code (errors.for_grpc_code).
_WORDING: dict[type[RequestError], str] = {
    OverloadedError: "the gateway at {target} is overloaded: {details}",
    DeadlineExceeded: "the request to {target} timed out: {details}",
    UnavailableError: "the gateway at {target} is unreachable: {details}",
    RequestError: "the request to {target} failed with {code}: {details}",
}


def rpc_error(exc: grpc.RpcError, target: str) -> RequestError:
    """Map a failed call to the gateway onto meshflow's errors."""
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return RequestError(
            f"{target} is not a Flow's gateway ({details}): a Client talks to the port of a "
            "Flow (Flow(port=...), `meshflow flow`), not to an executor's own port"
        )
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        # gRPC's own message size limit, not the gateway's in-flight limit
        return BadRequestError(f"the request is larger than the gateway accepts: {details}")
    kind = for_grpc_code(name, REFUSALS)
    message = _WORDING.get(kind, "{details}").format(target=target, code=name, details=details)
    if kind is ForbiddenError:
        return ForbiddenError(message, scope=_trailer(exc, MISSING_SCOPE))
    return kind(message)


def _trailer(exc: grpc.RpcError, key: str) -> str | None:
    """The value of one trailing metadata entry of a failed call, if it has one."""
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for name, value in trailers or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None
