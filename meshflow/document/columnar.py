"""The columnar wire layout: the documents of a request field by field (``DocumentColumns``).

In the row layout (``DataRequest.docs``) every document is a message of its own, so every hop
builds and encodes a Python object per document. In the columnar layout
(``DataRequest.columns``) a request holds one list per string field and **one buffer per
array field** (``embeddings``, ``tensors``: shape ``(n, ...)``, C order), so

- a hop reads all embeddings with one ``numpy.frombuffer``: ``docs.embeddings`` is a 2-D
  **read-only** view of the received bytes, no copy; assign to change it
  (``docs.embeddings = docs.embeddings + 1``), as for a single document's embedding;
- :class:`Document` objects are built only when an executor iterates or indexes ``docs``
  (``len(docs)`` and the bulk attributes do not build them);
- columns nobody changed are copied to the answer as they came, without decoding.

Arrays that cannot share one buffer (some documents without an embedding, or embeddings of
different dtypes or shapes in one request) are **not refused**: that field then travels per
document in ``rest``, in the row layout, as do tags, scores, matches and chunks. See
``docs/wire.md``.
"""

from __future__ import annotations

import itertools
import operator
import uuid
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from meshflow.document.array import DocumentArray
from meshflow.document.document import Document
from meshflow.document.proto import (
    _array_from_proto,
    _array_to_proto,
    _dtype,
    _prune,
    _struct_from_proto,
    documents_from_proto,
    documents_to_proto,
    nested_to_proto,
)
from meshflow.proto.v1 import data_request_pb2, document_pb2

__all__ = [
    "COLUMNAR_MIN_DOCS",
    "Columns",
    "columns_field_pieces",
    "columns_from_proto",
    "columns_pieces",
    "columns_to_bytes",
    "columns_to_proto",
    "documents_from_request",
    "documents_to_request",
    "prune_columns",
    "request_bytes",
    "to_rows",
    "unchanged_columns",
]

COLUMNAR_MIN_DOCS: Final = 2
"""Clients send requests of this many documents or more in columns, fewer in rows: a lone
document has no column to share, and its own message decodes faster (about 10 against
20 microseconds per hop)."""

Buffer: TypeAlias = "bytes | memoryview"
"""A piece of an encoded message: bytes, or an array's buffer (joined without a copy of
its own)."""

#: (Document attribute, DocumentColumns field) of the string and bytes columns.
STRING_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("id", "ids"),
    ("parent_id", "parent_ids"),
    ("text", "texts"),
    ("blob", "blobs"),
    ("uri", "uris"),
    ("mime_type", "mime_types"),
)
#: (Document attribute, DocumentColumns field) of the array columns.
ARRAY_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("_embedding", "embeddings"),
    ("_tensor", "tensors"),
)
_EMPTY: Final[dict[str, Any]] = {"ids": "", "parent_ids": "", "texts": "", "blobs": b""}
_EMPTY.update(uris="", mime_types="")
_ARRAY_NAMES = frozenset(name for _, name in ARRAY_COLUMNS)


class Columns:
    """The documents of one ``DocumentColumns`` message, decoded on demand.

    A lazy :class:`DocumentArray` holds one; it reads a column the first time it is asked
    for, and keeps what was handed out (lists, row views) so that the answer can tell which
    columns are still exactly what came in.

    Raises:
        ValueError: (on construction) a column's length is not the number of ids, or an
            array column's dtype, shape and buffer disagree.
    """

    __slots__ = ("_arrays", "_buffers", "_lists", "_rows", "_set", "_used", "changed", "n", "pb")

    def __init__(self, pb: document_pb2.DocumentColumns) -> None:
        self.pb = pb
        # The fields set, by name: one call, instead of one attribute lookup per column.
        self._set: dict[str, Any] = {fd.name: value for fd, value in pb.ListFields()}
        ids = self._set.get("ids")
        self.n = n = len(ids) if ids is not None else 0
        self._arrays: dict[str, npt.NDArray[Any] | None] = {}
        self._buffers: dict[str, bytes] = {}  # the array columns' bytes, as received
        for name, value in self._set.items():
            if name in _ARRAY_NAMES:
                self._buffers[name] = buffer = value.buffer
                self._arrays[name] = _matrix(value, buffer, n, name)
            elif len(value) != n:
                raise ValueError(f"column {name} holds {len(value)} values for {n} documents")
        self._lists: dict[str, list[Any]] = {}
        # What the Documents were built from, by column (to tell unchanged fields).
        self._used: dict[str, list[Any]] = {}
        self._rows: dict[str, list[Any]] = {}
        self.changed: set[str] = set()
        """Columns set through the bulk attributes before any Document was built."""

    @property
    def has_rest(self) -> bool:
        """Whether some field travels per document (then bulk setters build Documents)."""
        return "rest" in self._set

    def strings(self, name: str) -> list[Any]:
        """One value per document of a string/bytes column (a new list)."""
        return list(self._strings(name))

    def _strings(self, name: str) -> list[Any]:
        values = self._lists.get(name)
        if values is None:
            column = self._set.get(name)
            values = list(column) if column is not None else [_EMPTY[name]] * self.n
            self._lists[name] = values
        return values

    def set_strings(self, name: str, values: list[Any]) -> None:
        self._lists[name] = values
        self.changed.add(name)

    def array(self, name: str) -> npt.NDArray[Any] | None:
        """The ``(n, ...)`` array of an array column, or None when it has no column."""
        return self._arrays.get(name)

    def set_array(self, name: str, value: npt.NDArray[Any] | None) -> None:
        self._arrays[name] = value
        self.changed.add(name)

    def materialize(self) -> list[Document]:
        """Build the Documents (each array field a row view of its column)."""
        n = self.n
        lists = [self._strings(name) for _, name in STRING_COLUMNS]
        self._used = {name: values for (_, name), values in zip(STRING_COLUMNS, lists, strict=True)}
        rows = {name: _split(self._arrays.get(name), n) for _, name in ARRAY_COLUMNS}
        self._rows = rows
        embeddings, tensors = rows["embeddings"], rows["tensors"]
        rest = self._set.get("rest")
        docs = []
        new = Document.__new__
        for i, (id, parent_id, text, blob, uri, mime_type) in enumerate(zip(*lists, strict=True)):
            doc = new(Document)
            doc.id = id or uuid.uuid4().hex
            doc.parent_id = parent_id
            doc.text = text
            doc.blob = blob
            doc.uri = uri
            doc.mime_type = mime_type
            doc.tags = {}
            doc.scores = {}
            doc._embedding = embeddings[i]
            doc._tensor = tensors[i]
            doc._matches = None
            doc._chunks = None
            doc._wire = None
            if rest:
                _read_rest(doc, rest[i])
            docs.append(doc)
        return docs


def columns_from_proto(pb: document_pb2.DocumentColumns) -> DocumentArray:
    """A lazy DocumentArray over ``pb`` (see the module docstring).

    Raises:
        ValueError: the columns do not fit together (see :class:`Columns`).
    """
    return DocumentArray._lazy(Columns(pb))


def unchanged_columns(docs: DocumentArray, source: Columns) -> bool:
    """True when ``docs`` hold, in order, exactly what ``source`` decoded: every field the
    very object handed out, no tags, scores, matches or chunks (they are mutable)."""
    if docs._columns is source and docs._items is None:
        return not source.changed
    if source.has_rest or source.changed or len(docs) != source.n:
        return False
    items = docs._docs
    if not source._used:
        return False
    for (attr, _name), used in zip(STRING_COLUMNS, source._used.values(), strict=True):
        if not all(map(operator.is_, map(operator.attrgetter(attr), items), used)):
            return False
    for attr, name in ARRAY_COLUMNS:
        if not all(map(operator.is_, map(operator.attrgetter(attr), items), source._rows[name])):
            return False
    return not any(doc.tags or doc.scores or doc._matches or doc._chunks for doc in items)


def columns_to_proto(
    docs: DocumentArray, pb: document_pb2.DocumentColumns, source: Columns | None = None
) -> None:
    """Write ``docs`` into the (empty) message ``pb`` (see :func:`columns_to_bytes`)."""
    pb.MergeFromString(columns_to_bytes(docs, source))


def columns_to_bytes(docs: DocumentArray, source: Columns | None = None) -> bytes:
    """Serialize ``docs`` as a ``DocumentColumns`` message; array columns still as ``source``
    (or a lazy ``docs``) decoded them are written from the received bytes, without encoding.

    The array columns are appended to the serialized message by hand (protobuf merges
    concatenated fields): putting a large buffer into a protobuf message first costs more
    than the rest of the encoding.

    Raises:
        ValueError: an array has an object or structured dtype.
        TypeError: a tag is not JSON-like.
    """
    return b"".join(columns_pieces(docs, source))


def columns_pieces(docs: DocumentArray, source: Columns | None = None) -> list[Buffer]:
    """:func:`columns_to_bytes` as the pieces to join: a caller that wraps them (in a
    ``DataRequest``, :func:`columns_field_pieces`) joins once, so that a large array is
    copied once, not once per level of nesting."""
    columns = docs._columns
    if columns is not None and docs._items is None:
        return _unbuilt_pieces(columns)
    items = docs._docs
    n = len(items)
    pb = document_pb2.DocumentColumns()
    same_source = source is not None and source.n == n and bool(source._used)
    for attr, name in STRING_COLUMNS:
        values = list(map(operator.attrgetter(attr), items))
        if attr == "id" or any(values):
            getattr(pb, name).extend(values)
    fallback: dict[str, list[Any]] = {}
    fields: list[Buffer] = []
    for attr, name in ARRAY_COLUMNS:
        arrays = list(map(operator.attrgetter(attr), items))
        if same_source and all(map(operator.is_, arrays, source._rows[name])):  # type: ignore[union-attr]
            matrix = source._arrays.get(name)  # type: ignore[union-attr]
            if matrix is not None:
                fields += _column_field(name, source, matrix)  # type: ignore[arg-type]
            continue
        missing = sum(map(operator.is_, arrays, itertools.repeat(None, n)))
        if missing == n:
            continue
        if (
            not missing
            and len(set(map(_SHAPE, arrays))) == 1
            and len(set(map(_DTYPE, arrays))) == 1
        ):
            fields += _array_field(name, _stacked(arrays))
        else:
            fallback[attr] = arrays
    if fallback or any(doc.tags or doc.scores or doc._matches or doc._chunks for doc in items):
        for i, doc in enumerate(items):
            _write_rest(doc, pb.rest.add(), fallback, i)
    return [pb.SerializeToString(), *fields]


_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")


def _stacked(arrays: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """``numpy.stack`` of arrays of one shape and dtype, without its per-array calls."""
    first = arrays[0]
    if first.ndim == 0:
        return np.stack(arrays)
    return np.concatenate(arrays).reshape(len(arrays), *first.shape)


def _unbuilt_pieces(columns: Columns) -> list[Buffer]:
    """No Document was built: the received columns, but for what the bulk setters changed."""
    pb = document_pb2.DocumentColumns()
    fields: list[Buffer] = []
    for name, value in columns._set.items():
        if name in _ARRAY_NAMES or name in columns.changed:
            continue
        getattr(pb, name).extend(value)
    for name in columns.changed:
        if name in columns._lists:
            values = columns._lists[name]
            if name == "ids" or any(values):
                getattr(pb, name).extend(values)
    for _, name in ARRAY_COLUMNS:
        matrix = columns._arrays.get(name)
        if matrix is not None:
            fields += _column_field(name, columns, matrix)
    return [pb.SerializeToString(), *fields]


def _column_field(name: str, source: Columns, matrix: npt.NDArray[Any]) -> list[Buffer]:
    if name in source.changed:
        return _array_field(name, matrix)
    received = getattr(source.pb, name)  # as it came: its own bytes, no copy of the array
    return _ndarray_field(
        _FIELD_NUMBERS[name], source._buffers[name], received.dtype, received.shape
    )


def _array_field(name: str, array: npt.NDArray[Any]) -> list[Buffer]:
    dtype = array.dtype
    if dtype.hasobject or dtype.fields is not None:
        raise ValueError(
            f"cannot serialize the {name} column: dtype {dtype} is not supported; use a "
            f"numeric, bool, bytes or str dtype without fields"
        )
    # A C-contiguous array is joined as it is (its buffer), without tobytes().
    buffer = np.ascontiguousarray(array).data
    return _ndarray_field(_FIELD_NUMBERS[name], buffer, dtype.str, array.shape)


def _ndarray_field(number: int, buffer: Buffer, dtype: str, shape: Any) -> list[Buffer]:
    """The pieces of field ``number`` holding an NdArray (``buffer`` is bytes-like, left as
    it is: copied once, by the caller's join)."""
    meta = document_pb2.NdArray(dtype=dtype, shape=shape).SerializeToString()
    size = _nbytes(buffer)
    head = _varint(size)
    return [_tag(number), _varint(1 + len(head) + size + len(meta)), b"\x0a", head, buffer, meta]


_FIELD_NUMBERS: Final[dict[str, int]] = {
    name: document_pb2.DocumentColumns.DESCRIPTOR.fields_by_name[name].number
    for _, name in ARRAY_COLUMNS
}
COLUMNS_FIELD: Final = data_request_pb2.DataRequest.DESCRIPTOR.fields_by_name["columns"].number


def columns_field_pieces(pieces: list[Buffer]) -> list[Buffer]:
    """``DataRequest.columns`` holding the ``DocumentColumns`` that ``pieces`` (of
    :func:`columns_pieces`) join into, as pieces still: appended to a serialized
    DataRequest without columns, they give it those."""
    size = sum(map(_nbytes, pieces))
    return [_tag(COLUMNS_FIELD), _varint(size), *pieces]


def _nbytes(piece: Buffer) -> int:
    return piece.nbytes if isinstance(piece, memoryview) else len(piece)


def _tag(number: int) -> bytes:
    return _varint(number << 3 | 2)  # wire type 2: length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _write_rest(
    doc: Document, pb: document_pb2.Document, fallback: dict[str, list[Any]], i: int
) -> None:
    nested_to_proto(doc, pb)
    embeddings = fallback.get("_embedding")
    if embeddings is not None and embeddings[i] is not None:
        _array_to_proto(embeddings[i], pb.embedding, doc, "embedding")
    tensors = fallback.get("_tensor")
    if tensors is not None and tensors[i] is not None:
        _array_to_proto(tensors[i], pb.tensor, doc, "tensor")


def _read_rest(doc: Document, pb: document_pb2.Document) -> None:
    if pb.HasField("tags"):
        doc.tags = _struct_from_proto(pb.tags)
    if pb.scores:
        doc.scores = dict(pb.scores)
    if pb.matches:
        doc._matches = documents_from_proto(pb.matches)
    if pb.chunks:
        doc._chunks = documents_from_proto(pb.chunks)
    if pb.HasField("embedding"):
        doc._embedding = _array_from_proto(pb.embedding, doc.id, "embedding")
    if pb.HasField("tensor"):
        doc._tensor = _array_from_proto(pb.tensor, doc.id, "tensor")


def _matrix(pb: document_pb2.NdArray, buffer: bytes, n: int, name: str) -> npt.NDArray[Any]:
    shape = list(pb.shape)
    if not shape or shape[0] != n:
        raise ValueError(
            f"column {name} has shape {tuple(shape)}; its first dimension must be the number "
            f"of documents, {n}"
        )
    try:
        # A read-only view of the received bytes: no copy.
        return np.frombuffer(buffer, dtype=_dtype(pb.dtype)).reshape(shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"cannot read column {name} (dtype {pb.dtype!r}, shape {tuple(shape)}, "
            f"{len(buffer)} bytes): {exc}"
        ) from None


def _split(matrix: npt.NDArray[Any] | None, n: int) -> list[npt.NDArray[Any] | None]:
    if matrix is None:
        return [None] * n
    if matrix.ndim == 1:  # rows of a 1-d column are 0-d arrays, not numpy scalars
        return [matrix[i, ...] for i in range(n)]
    return list(matrix)


# -- requests -------------------------------------------------------------------------------


def documents_from_request(request: data_request_pb2.DataRequest) -> DocumentArray:
    """The documents of ``request``, whichever layout it uses (lazy for the columnar one).

    Raises:
        ValueError: the request holds documents in both layouts, or its arrays or columns
            do not fit together.
    """
    if request.HasField("columns"):
        if request.docs:
            raise ValueError(
                "the request holds documents in both layouts (docs and columns); "
                "send them in one of them"
            )
        return columns_from_proto(request.columns)
    return documents_from_proto(request.docs)


def documents_to_request(
    docs: DocumentArray, request: data_request_pb2.DataRequest, *, columnar: bool = True
) -> None:
    """Write ``docs`` into the request (whose document fields are empty), in the columnar
    layout or, with ``columnar=False``, the row layout."""
    if columnar:
        request.columns.SetInParent()  # a request of no documents still says its layout
        columns_to_proto(docs, request.columns)
    else:
        documents_to_proto(docs, request.docs)


def request_bytes(
    docs: DocumentArray, request: data_request_pb2.DataRequest, *, columnar: bool = True
) -> bytes:
    """The serialized ``request`` (whose document fields are empty) holding ``docs``: the
    same as :func:`documents_to_request` then ``SerializeToString``, without putting the
    columns into the message first."""
    if columnar:
        pieces = columns_field_pieces(columns_pieces(docs))
        return b"".join((request.SerializeToString(), *pieces))
    documents_to_proto(docs, request.docs)
    return request.SerializeToString()


def to_rows(request: data_request_pb2.DataRequest) -> None:
    """Move the columnar documents of ``request`` into the row layout, in place (for the
    gateway's merges and shard splits, which work document by document)."""
    if not request.HasField("columns"):
        return
    docs = columns_from_proto(request.columns)
    del request.docs[:]
    documents_to_proto(docs, request.docs)
    request.ClearField("columns")


def prune_columns(pb: document_pb2.DocumentColumns, fields: frozenset[str] | set[str]) -> None:
    """Clear, in place, every column not named in ``fields`` (paths as for
    :func:`~meshflow.document.proto.prune`); ``ids`` always stay."""
    fields = frozenset(fields)
    for attr, name in (*STRING_COLUMNS[1:], *ARRAY_COLUMNS):
        if attr.lstrip("_") not in fields:
            pb.ClearField(name)
    if pb.rest:
        _prune(pb.rest, fields, "")
        if not any(r.ListFields() for r in pb.rest):
            pb.ClearField("rest")
