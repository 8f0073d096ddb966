"""Convert Documents to and from their ``meshflow.v1.Document`` protobuf messages.

This runs on every request, so it avoids anything per element: an array travels as its raw
C-order bytes, its dtype string with byte order (``arr.dtype.str``, e.g. ``"<f4"``) and its
shape, and is read back with ``numpy.frombuffer``: arrays read back are **read-only** views
of the received bytes (no copy). To change one, assign a new array
(``doc.embedding = doc.embedding / norm``); an in-place change raises numpy's "assignment
destination is read-only".

Because of that, :func:`unchanged_on_wire` can tell cheaply that the documents of a request
are still exactly what was received, so an executor that only reads them answers with the
request's own bytes instead of encoding it again.

``tags`` travel as a ``google.protobuf.Struct``, which stores every number as a double: ints
come back as floats (``{"n": 1}`` reads back as ``{"n": 1.0}``, which still compares equal),
and ints beyond 2**53 lose precision. Tuples come back as lists. Only set fields are written,
so an empty string, empty bytes or empty dict reads back as itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import struct_pb2
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from meshflow.document.array import DocumentArray
from meshflow.document.document import Document
from meshflow.proto.v1 import document_pb2

__all__ = [
    "dict_to_struct",
    "document_from_proto",
    "document_to_proto",
    "documents_from_proto",
    "documents_to_proto",
    "prune",
    "struct_to_dict",
    "unchanged_on_wire",
]

DocumentProtos = RepeatedCompositeFieldContainer[document_pb2.Document]

_DTYPES: dict[str, np.dtype[Any]] = {}
_MAX_CACHED_DTYPES = 256  # dtype strings come from the network: bound the cache

MAX_NESTING = 32
"""How deep JSON-like values (tags, parameters, results) may nest: every level is two
protobuf messages, and protobuf refuses to parse messages nested more than 100 deep."""


def document_to_proto(doc: Document, pb: document_pb2.Document) -> None:
    """Write ``doc`` into the (empty) message ``pb``, matches and chunks included.

    Raises:
        ValueError: an array has an object or structured dtype.
        TypeError: a tag is not JSON-like.
    """
    if doc.id:
        pb.id = doc.id
    if doc.parent_id:
        pb.parent_id = doc.parent_id
    if doc.text:
        pb.text = doc.text
    if doc.blob:
        pb.blob = doc.blob
    if doc.uri:
        pb.uri = doc.uri
    if doc.mime_type:
        pb.mime_type = doc.mime_type
    if doc._tensor is not None:
        _array_to_proto(doc._tensor, pb.tensor, doc, "tensor")
    if doc._embedding is not None:
        _array_to_proto(doc._embedding, pb.embedding, doc, "embedding")
    nested_to_proto(doc, pb)


def nested_to_proto(doc: Document, pb: document_pb2.Document) -> None:
    """Write ``doc``'s tags, scores, matches and chunks into ``pb``."""
    if doc.tags:
        _struct_to_proto(doc.tags, pb.tags, "tags")
    if doc.scores:
        pb.scores.update(doc.scores)
    if doc._matches:
        documents_to_proto(doc._matches, pb.matches)
    if doc._chunks:
        documents_to_proto(doc._chunks, pb.chunks)


def document_from_proto(pb: document_pb2.Document, index: int = -1) -> Document:
    """Build a Document from ``pb``; a message without id gets a fresh one.

    Raises:
        ValueError: an array's dtype, shape and buffer do not fit together.
    """
    # Bypasses __init__ (and its conversions): this runs for every document of every request.
    doc = Document.__new__(Document)
    doc.id = pb.id or uuid.uuid4().hex
    doc.parent_id = pb.parent_id
    doc.text = pb.text
    doc.blob = pb.blob
    doc.uri = pb.uri
    doc.mime_type = pb.mime_type
    doc.tags = _struct_from_proto(pb.tags) if pb.HasField("tags") else {}
    doc.scores = dict(pb.scores) if pb.scores else {}
    doc._tensor = _array_from_proto(pb.tensor, doc.id, "tensor") if pb.HasField("tensor") else None
    doc._embedding = (
        _array_from_proto(pb.embedding, doc.id, "embedding") if pb.HasField("embedding") else None
    )
    doc._matches = documents_from_proto(pb.matches) if pb.matches else None
    doc._chunks = documents_from_proto(pb.chunks) if pb.chunks else None
    plain = pb.id and not (doc.tags or doc.scores or doc._matches or doc._chunks)
    wire = (index, doc.id, doc.parent_id, doc.text, doc.blob, doc.uri, doc.mime_type)
    doc._wire = (*wire, doc._tensor, doc._embedding) if plain and index >= 0 else None
    return doc


def unchanged_on_wire(docs: DocumentArray) -> bool:
    """True when ``docs`` are, in order, exactly the documents decoded from a request.

    Only documents without tags, scores, matches and chunks are tracked; every field must
    still hold the very object decoded (arrays are read-only, so they cannot have changed).
    """
    for i, doc in enumerate(docs):
        wire = doc._wire
        if (
            wire is None
            or wire[0] != i
            or doc.id is not wire[1]
            or doc.parent_id is not wire[2]
            or doc.text is not wire[3]
            or doc.blob is not wire[4]
            or doc.uri is not wire[5]
            or doc.mime_type is not wire[6]
            or doc._tensor is not wire[7]
            or doc._embedding is not wire[8]
            or doc.tags
            or doc.scores
            or doc._matches
            or doc._chunks
        ):
            return False
    return True


def documents_to_proto(docs: Iterable[Document], repeated_field: DocumentProtos) -> None:
    """Append a message for each Document to ``repeated_field`` (e.g. ``request.docs``)."""
    for doc in docs:
        document_to_proto(doc, repeated_field.add())


def documents_from_proto(repeated_field: DocumentProtos) -> DocumentArray:
    """Build a DocumentArray from a repeated ``Document`` field (e.g. ``request.docs``)."""
    return DocumentArray._wrap([document_from_proto(pb, i) for i, pb in enumerate(repeated_field)])


# -- arrays ---------------------------------------------------------------------------------


def _array_to_proto(
    array: npt.NDArray[Any], pb: document_pb2.NdArray, doc: Document, field: str
) -> None:
    dtype = array.dtype
    if dtype.hasobject or dtype.fields is not None:
        raise ValueError(
            f"cannot serialize the {field} of Document {doc.id!r}: dtype {dtype} is not "
            f"supported; use a numeric, bool, bytes or str dtype without fields"
        )
    # tobytes() writes C order whatever the memory layout; dtype.str keeps the byte order.
    pb.buffer = array.tobytes()
    pb.dtype = dtype.str
    pb.shape.extend(array.shape)


def _array_from_proto(pb: document_pb2.NdArray, doc_id: str, field: str) -> npt.NDArray[Any]:
    try:
        dtype = _dtype(pb.dtype)
        shape = pb.shape[:]  # a list; tuple(pb.shape) is several times slower
        array = np.frombuffer(pb.buffer, dtype=dtype)
        if len(shape) != 1 or shape[0] != array.shape[0]:
            array = array.reshape(shape)
        # A read-only view of the received bytes: no copy (see the module docstring).
        return array
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"cannot read the {field} of Document {doc_id!r} (dtype {pb.dtype!r}, "
            f"shape {tuple(pb.shape)}, {len(pb.buffer)} bytes): {exc}"
        ) from None


def _dtype(name: str) -> np.dtype[Any]:
    dtype = _DTYPES.get(name)
    if dtype is None:
        dtype = np.dtype(name)
        # Object, structured and sub-array dtypes ("(4000,4000)f8": one element of 128 MB)
        # are not arrays of numbers, bytes or strings.
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(f"dtype {name!r} is not supported")
        if len(_DTYPES) < _MAX_CACHED_DTYPES:
            _DTYPES[name] = dtype
    return dtype


# -- tags and other JSON-like mappings ------------------------------------------------------
# json_format.MessageToDict/ParseDict are generic and slow; these handle Struct only.


def dict_to_struct(mapping: Mapping[str, Any]) -> struct_pb2.Struct:
    """Return a new ``google.protobuf.Struct`` holding the JSON-like ``mapping``.

    Numbers are stored as doubles (see the module docstring); tuples become lists.

    Raises:
        TypeError: a key is not a str, or a value is not JSON-like.
        ValueError: dicts and lists nest more than :data:`MAX_NESTING` levels.

    Example::

        request.parameters.CopyFrom(dict_to_struct({"limit": 10, "fields": ["text"]}))
    """
    struct = struct_pb2.Struct()
    _struct_to_proto(mapping, struct, "")
    return struct


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Return the contents of ``struct`` as a dict; every number is a float."""
    return _struct_from_proto(struct)


def results_to_dict(results: Mapping[str, struct_pb2.Struct]) -> dict[str, dict[str, Any]]:
    """An answer's ``results`` (what each executor returned, by executor) as plain dicts."""
    return {name: _struct_from_proto(struct) for name, struct in results.items()}


def _struct_to_proto(
    mapping: Mapping[str, Any], pb: struct_pb2.Struct, path: str, depth: int = 0
) -> None:
    if depth >= MAX_NESTING:
        raise ValueError(
            f"{path or 'the mapping'} nests dicts and lists more than {MAX_NESTING} levels deep"
        )
    fields = pb.fields
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(
                f"cannot store key {key!r} ({type(key).__name__}) in {path or 'the mapping'}: "
                f"keys must be str"
            )
        _value_to_proto(value, fields[key], f"{path}[{key!r}]", depth)


def _value_to_proto(value: Any, pb: struct_pb2.Value, path: str, depth: int) -> None:
    # bool before int/float: bool is a subclass of int.
    if isinstance(value, str):
        pb.string_value = value
    elif isinstance(value, bool | np.bool_):
        pb.bool_value = bool(value)
    elif isinstance(value, int | float | np.integer | np.floating):
        pb.number_value = float(value)
    elif value is None:
        pb.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, Mapping):
        pb.struct_value.SetInParent()  # so that an empty dict is kept
        _struct_to_proto(value, pb.struct_value, path, depth + 1)
    elif isinstance(value, list | tuple):
        if depth + 1 >= MAX_NESTING:
            raise ValueError(f"{path} nests dicts and lists more than {MAX_NESTING} levels deep")
        values = pb.list_value.values
        pb.list_value.SetInParent()  # so that an empty list is kept
        for i, item in enumerate(value):
            _value_to_proto(item, values.add(), f"{path}[{i}]", depth + 1)
    else:
        raise TypeError(
            f"cannot store {type(value).__name__} at {path}: tags hold JSON-like values only "
            f"(str, int, float, bool, None, list, dict)"
        )


def _struct_from_proto(pb: struct_pb2.Struct) -> dict[str, Any]:
    return {key: _value_from_proto(value) for key, value in pb.fields.items()}


def _value_from_proto(pb: struct_pb2.Value) -> Any:
    kind = pb.WhichOneof("kind")
    if kind == "string_value":
        return pb.string_value
    if kind == "number_value":
        return pb.number_value
    if kind == "bool_value":
        return pb.bool_value
    if kind == "struct_value":
        return _struct_from_proto(pb.struct_value)
    if kind == "list_value":
        return [_value_from_proto(item) for item in pb.list_value.values]
    return None  # null_value, or unset


# -- selection pushdown ---------------------------------------------------------------------

PRUNABLE = (
    "parent_id",
    "text",
    "blob",
    "tensor",
    "embedding",
    "uri",
    "mime_type",
    "tags",
    "scores",
    "matches",
    "chunks",
)
"""Fields :func:`prune` may drop; ``id`` always stays."""


def prune(repeated_field: DocumentProtos, fields: Iterable[str]) -> None:
    """Clear, in place, every Document field not named in ``fields``.

    ``fields`` are paths: ``"text"``, ``"matches"`` (keep the matches) and
    ``"matches.scores"`` (what to keep inside them); a nested list whose path names no field
    of its own keeps only ids.
    """
    _prune(repeated_field, frozenset(fields), "")


def _prune(repeated_field: DocumentProtos, fields: frozenset[str], prefix: str) -> None:
    drop = [name for name in PRUNABLE if prefix + name not in fields]
    if not drop:
        return
    nested = [name for name in ("matches", "chunks") if name not in drop]
    for pb in repeated_field:
        for name in drop:
            pb.ClearField(name)
        for name in nested:
            _prune(getattr(pb, name), fields, f"{prefix}{name}.")
