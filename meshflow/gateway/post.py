"""One ``post`` through the Flow, whatever door it came in by: the GraphQL ``post`` mutation
and ``stream`` subscription, and REST ``POST /post``.

The caller's scope is checked, the DataRequest built from plain inputs (documents as
:class:`DocumentFields`), run, and its answer read. Every failure is a
:class:`~meshflow.errors.RequestError` subclass; each door answers it from the error's own
codes (``graphql_code``, ``http_status``), so the doors cannot disagree.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from graphql import GraphQLError

from meshflow.document.proto import dict_to_struct, struct_to_dict
from meshflow.errors import BadRequestError, ExecutorError, TooManyDocumentsError
from meshflow.gateway.server import Gateway
from meshflow.identity import Identity
from meshflow.proto.v1 import data_request_pb2, document_pb2


class ArrayFields(Protocol):
    """An input array: values in C order, with its shape and dtype."""

    @property
    def data(self) -> list[float]: ...
    @property
    def shape(self) -> list[int] | None: ...
    @property
    def dtype(self) -> str: ...


class DocumentFields(Protocol):
    """An input Document as a door receives it (GraphQL's ``DocumentInput``, REST's JSON)."""

    @property
    def id(self) -> str | None: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def blob(self) -> str | None: ...  # base64
    @property
    def uri(self) -> str | None: ...
    @property
    def mime_type(self) -> str | None: ...
    @property
    def tags(self) -> Any: ...
    @property
    def tensor(self) -> ArrayFields | None: ...
    @property
    def embedding(self) -> ArrayFields | None: ...


@dataclass(frozen=True)
class ArrayInput:
    data: list[float]
    shape: list[int] | None = None
    dtype: str = "float32"


@dataclass(frozen=True)
class DocumentInput:
    id: str | None = None
    parent_id: str | None = None
    text: str | None = None
    blob: str | None = None
    uri: str | None = None
    mime_type: str | None = None
    tags: Any = None
    tensor: ArrayInput | None = None
    embedding: ArrayInput | None = None


def check_count(docs: int, max_docs: int) -> None:
    """Refuse a request of more than ``max_docs`` documents."""
    if docs > max_docs:
        raise TooManyDocumentsError(
            f"{docs} documents in one request; the gateway accepts at most {max_docs}"
        )


async def run_post(
    gateway: Gateway,
    *,
    on: str,
    docs: Sequence[DocumentFields],
    parameters: Any,
    target_executor: str | None,
    fields: Iterable[str],
    max_docs: int,
    timeout: float | None = None,
    identity: Identity | None = None,
    door: str = "",
    max_answer_bytes: int | None = None,
) -> data_request_pb2.DataRequest:
    """Run one ``post`` through the Flow and return its answer.

    The caller's scope for ``on`` is checked before the request is built: a refused caller
    costs no conversion of its documents. ``max_answer_bytes``: the bound of the answer's
    fields as the caller's task writes them (:func:`limit_answer_bytes`, GraphQL's doors).

    Raises:
        RequestError: a subclass for each failure; :class:`ExecutorError` when an executor
            failed, naming it.
    """
    check_count(len(docs), max_docs)
    gateway.authorize(identity, on, door)
    data = build_request(on, docs, parameters, target_executor, fields)
    deadline = None if timeout is None else time.monotonic() + timeout
    answer = data_request_pb2.DataRequest.FromString(
        await gateway.run(data, deadline, identity, door=door)
    )
    status = answer.status
    if status.code != data_request_pb2.Status.OK:
        raise ExecutorError(
            status.message,
            executor=status.executor,
            endpoint=status.endpoint,
            exception_type=status.exception_type,
        )
    if max_answer_bytes is not None:
        limit_answer_bytes(max_answer_bytes)
    return answer


def build_request(
    on: str,
    docs: Sequence[DocumentFields],
    parameters: Any,
    target_executor: str | None,
    fields: Iterable[str],
) -> bytes:
    """Serialize the DataRequest for a ``post``; bad input raises :class:`BadRequestError`."""
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequestError("parameters must be a JSON object")
    request = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(
            request_id=uuid.uuid4().hex,
            endpoint=on,
            target_executor=target_executor or "",
            fields=sorted(fields),
        )
    )
    try:
        if parameters:
            request.parameters.CopyFrom(dict_to_struct(parameters))
        for i, doc in enumerate(docs):
            _fill(request.docs.add(), doc, i)
    except binascii.Error:
        raise BadRequestError("a document's blob is not valid base64") from None
    except (TypeError, ValueError) as exc:
        raise BadRequestError(f"parameters or tags are not JSON-like: {exc}") from None
    return request.SerializeToString()


def _fill(pb: document_pb2.Document, doc: DocumentFields, i: int) -> None:
    pb.id = doc.id or uuid.uuid4().hex
    for name in ("parent_id", "text", "uri", "mime_type"):
        value = getattr(doc, name)
        if value:
            setattr(pb, name, value)
    if doc.blob:
        pb.blob = base64.b64decode(doc.blob, validate=True)
    if doc.tags:
        if not isinstance(doc.tags, dict):
            raise BadRequestError(f"docs[{i}].tags must be a JSON object")
        pb.tags.CopyFrom(dict_to_struct(doc.tags))
    for name in ("tensor", "embedding"):
        value = getattr(doc, name)
        if value is not None:
            array = _array(value, f"docs[{i}].{name}")
            target = getattr(pb, name)
            target.buffer = array.tobytes()
            target.dtype = array.dtype.str
            target.shape.extend(array.shape)


_INPUT_KINDS = "biuf"  # bool, signed and unsigned integers, floats
_MAX_DIMS = 32  # numpy's own limit before 2.0


def _array(value: ArrayFields, where: str) -> np.ndarray[Any, Any]:
    """The numpy array of an input; its dtype must be a plain number type and its shape
    must hold exactly the values given, so an input never allocates more than it sends."""
    try:
        dtype = np.dtype(value.dtype)
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in _INPUT_KINDS or dtype.subdtype is not None:
        raise BadRequestError(
            f"{where}.dtype {value.dtype!r} is not a number type: use e.g. 'float32', "
            "'float64', 'int64', 'uint8' or 'bool'"
        )
    if value.shape is not None:
        shape = value.shape
        if len(shape) > _MAX_DIMS or not all(type(d) is int and d >= 0 for d in shape):
            raise BadRequestError(
                f"{where}.shape must be at most {_MAX_DIMS} sizes, each a whole number >= 0"
            )
        # checked as it grows: a long shape of large sizes would otherwise cost the event loop
        # a multiplication of ever larger numbers per entry
        size = 0 if 0 in shape else 1
        for dim in shape if size else ():
            size *= dim
            if size > len(value.data):
                break
        if size != len(value.data):
            shown = ", ".join(str(d)[:12] for d in shape[:4]) + (", ..." if len(shape) > 4 else "")
            raise BadRequestError(
                f"{where}.shape [{shown}] does not hold the {len(value.data)} values given"
            )
    try:
        array = np.asarray(value.data, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequestError(f"{where}: {exc}") from None
    return array if value.shape is None else array.reshape(value.shape)


class _AnswerBudget:
    """What is left of one answer's bytes."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def charge(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise GraphQLError(
                "the answer would be larger than the gateway writes "
                "(GraphQLLimits.max_answer_bytes): select fewer fields or fewer aliases of "
                "them, or ask for fewer documents",
                extensions={"code": "ANSWER_TOO_LARGE"},
            )


_ANSWER: ContextVar[_AnswerBudget | None] = ContextVar("meshflow_answer", default=None)


def limit_answer_bytes(limit: int | None) -> None:
    """Bound the document fields written from here on in this task's answer: each alias and
    selection of a field counts (GraphQL's aliases may select one field many times over, and
    each writes all of it), strings by their length, arrays at 8 bytes a value, tags by their
    encoded size."""
    _ANSWER.set(None if limit is None else _AnswerBudget(limit))


def charge_answer(size: int) -> None:
    """Count ``size`` bytes of a field written into the answer against its bound."""
    budget = _ANSWER.get()
    if budget is not None:
        budget.charge(size)


SHORT_STRING = 16
"""Strings up to this length (ids, names) are not worth counting against an answer's bound."""


def answer_string(value: str) -> str:
    """A string field of an answer, counted against its bound."""
    if len(value) > SHORT_STRING:
        charge_answer(len(value))
    return value


def answer_tags(pb: document_pb2.Document) -> dict[str, Any]:
    """A Document's tags as a dict, counted against the answer's bound by their encoded
    size."""
    if not pb.HasField("tags"):
        return {}
    budget = _ANSWER.get()
    if budget is not None:
        budget.charge(pb.tags.ByteSize())
    return struct_to_dict(pb.tags)


def answer_array(pb: document_pb2.NdArray) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The values of an answer's array, in C order, as one float64 array (orjson writes it
    as a JSON list, as it writes a list of floats, without a Python float per value),
    counted against the answer's bound at 8 bytes a value."""
    dtype = np.dtype(pb.dtype)
    budget = _ANSWER.get()
    if budget is not None:  # before anything is read: the message's size tells the count
        budget.charge(8 * (pb.ByteSize() // max(dtype.itemsize, 1)))
    return np.frombuffer(pb.buffer, dtype=dtype).astype(np.float64).ravel()


def array_values(pb: document_pb2.NdArray) -> list[float]:
    """The values of an answer's array, in C order, as floats (how every door sends them).

    Raises:
        GraphQLError: ``ANSWER_TOO_LARGE``, past the bound of :func:`limit_answer_bytes`.
    """
    values: list[float] = answer_array(pb).tolist()
    return values
