"""Fast answers: Documents projected straight from the answer's protobuf, written with orjson.

graphql-core completes a value field by field: for each field of each object it builds a
resolve info, calls Strawberry's resolver wrapper, awaits-or-not the result and completes it
by its type. A search answer of 10 queries x 50 matches is ~1,000 such fields, about 10 ms
of the gateway's CPU for 23 kB of JSON. Yet a ``Document`` is a plain read of a protobuf
message: its fields take no arguments, have no resolver of their own beyond the read, and
cannot fail.

:class:`AnswerExecutionContext` therefore completes a ``Document`` (and its ``NdArray``s,
its ``matches`` and ``chunks``, recursively) by a *projection*: graphql-core's own
``collect_subfields`` turns the already validated selection into response keys (aliases,
fragments, ``@include``/``@skip`` applied; ``__typename`` honoured), and each key reads its
field from the message as the resolvers of :mod:`meshflow.gateway.graphql` would, in the same
order, to the same values. Anything else takes graphql-core's generic path, which then
answers exactly as before: another type, a ``Document`` not read from an answer, ``@defer``,
a field the projection does not know, or any exception while projecting (the generic path
then raises the error a resolver would have, with its path).

:func:`encode_answer` writes the answer with orjson (an array's values are projected as one
float64 numpy array, which orjson writes in one C loop, with no Python float per value). The
JSON holds the same values as ``json.dumps`` wrote (floats are written in their shortest
round-trip form either way, some spelled differently: ``1.5e-05`` becomes ``0.000015``;
non-ASCII text is UTF-8 rather than ``\\u`` escapes). A non-finite float becomes ``null``
(``json.dumps`` wrote ``NaN``, which is not JSON). Values orjson refuses (integers beyond 64
bits, non-string keys) fall back to ``json.dumps``.
"""

from __future__ import annotations

import base64
import json
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from graphql import GraphQLInt, GraphQLObjectType
from graphql.execution.collect_fields import FieldDetailsList
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from meshflow.gateway.graphql import DocumentType
from meshflow.gateway.post import SHORT_STRING, answer_array, answer_string, answer_tags

Read = Callable[[Any], Any]
"""Reads one field of a protobuf message, as its resolver would; a plan is compiled into one
:data:`Read` per level that reads a message into its completed value (a dict)."""


def _scores(pb: Any) -> dict[str, float]:
    # As dict(pb.scores), in the same order: a comprehension is 3x faster on a protobuf map.
    scores = pb.scores
    return {name: scores[name] for name in scores}


def _string(field: str) -> Read:
    """Reads a string field, counted against the answer's bound (``post.answer_string``) when
    long: one call per field, as this runs for every field of every Document."""
    get = operator.attrgetter(field)

    def read(pb: Any) -> Any:
        value = get(pb)
        return answer_string(value) if len(value) > SHORT_STRING else value

    return read


_DOCUMENT: dict[str, Read] = {
    # each counted against the answer's bound (post.limit_answer_bytes), as the resolvers do
    "id": _string("id"),
    "parentId": _string("parent_id"),
    "text": _string("text"),
    "blob": lambda pb: answer_string(base64.b64encode(pb.blob).decode("ascii")),
    "uri": _string("uri"),
    "mimeType": _string("mime_type"),
    "tags": answer_tags,
    "scores": _scores,
}
_DOCUMENTS = {"matches": "matches", "chunks": "chunks"}  # GraphQL name -> proto field
_ARRAYS = {"tensor": "tensor", "embedding": "embedding"}


def object_reader(steps: list[tuple[str, Read]]) -> Read:
    """Reads a message into the dict of its response keys, in order."""

    def project(pb: Any) -> dict[str, Any]:
        out = {}
        for key, read in steps:
            out[key] = read(pb)
        return out

    return project


def _list(field: str, project: Read) -> Read:
    """Reads a repeated message field (``matches``, ``chunks``), each item by ``project``."""
    items = operator.attrgetter(field)
    return lambda pb: [project(item) for item in items(pb)]


def _optional(field: str, project: Read) -> Read:
    """Reads a message field (``tensor``, ``embedding``): null when absent, as its resolver."""
    return lambda pb: project(getattr(pb, field)) if pb.HasField(field) else None


class NotPlanned(Exception):
    """A selection the projection does not cover: the generic path completes it."""


class AnswerExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's execution, with each ``Document`` of an answer completed by projection
    (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per execution: the Documents of one list share their field group (graphql-core
        # passes the same list object for each item), so each level is planned once.
        self._plans: dict[tuple[str, int], Read | None] = {}

    def complete_object_value(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        info: Any,
        path: Any,
        result: Any,
        position_context: Any,
    ) -> Any:
        if return_type.name == "Document" and isinstance(result, DocumentType):
            plan = self._plan(return_type, field_details_list)
            if plan is not None:
                try:
                    return plan(result._pb)
                except Exception:  # the generic path raises it again, with its path
                    pass
        return super().complete_object_value(
            return_type, field_details_list, info, path, result, position_context
        )

    def _plan(self, object_type: GraphQLObjectType, fields: FieldDetailsList) -> Read | None:
        key = (object_type.name, id(fields))
        if key not in self._plans:
            try:
                self._plans[key] = self._compile(object_type, fields)
            except NotPlanned:
                self._plans[key] = None
        return self._plans[key]

    def _compile(self, object_type: GraphQLObjectType, fields: FieldDetailsList) -> Read:
        # graphql-core's memoized collection: the same keys, in the same order, with the same
        # directives and fragments applied as its generic completion would use.
        collected = self.collect_subfields(object_type, fields)
        if collected.new_defer_usages or collected.forbidden_directive_instances:
            raise NotPlanned
        steps: list[tuple[str, Read]] = []
        for key, group in collected.grouped_field_set.items():
            if any(d.defer_usage is not None or d.fragment_variable_values for d in group):
                raise NotPlanned
            name = group[0].node.name.value
            steps.append((key, self._read(object_type, name, group)))
        return object_reader(steps)

    def _read(self, object_type: GraphQLObjectType, name: str, group: FieldDetailsList) -> Read:
        """How field ``name`` of ``object_type`` is read, as its resolver reads it."""

        def sub(type_name: str) -> Read:
            inner = self.schema.type_map[type_name]
            assert isinstance(inner, GraphQLObjectType)
            return self._compile(inner, group)

        return field_reader(object_type.name, name, sub)


def field_reader(type_name: str, name: str, sub: Callable[[str], Read]) -> Read:
    """How field ``name`` of a ``Document`` or ``NdArray`` is read, as its resolver reads it;
    ``sub(type_name)`` plans the field's own selection (``matches``: a ``Document``).

    Raises:
        NotPlanned: a field the projection does not know.
    """
    if name == "__typename":
        return lambda pb: type_name
    if type_name == "Document":
        if name in _DOCUMENT:
            return _DOCUMENT[name]
        if name in _DOCUMENTS:
            return _list(_DOCUMENTS[name], sub("Document"))
        if name in _ARRAYS:
            return _optional(_ARRAYS[name], sub("NdArray"))
    elif type_name == "NdArray":
        if name == "shape":
            serialize_int = GraphQLInt.serialize
            return lambda pb: [serialize_int(v) for v in pb.shape]
        if name == "dtype":
            return operator.attrgetter("dtype")
        if name == "data":
            return answer_array  # a float64 array: encode_answer writes it as a list
    raise NotPlanned


def encode_answer(data: object) -> bytes:
    """The JSON of an answer (see the module's docstring for how it differs from
    ``json.dumps``'s)."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:
        return json.dumps(data, separators=(",", ":"), default=_listed).encode()


def _listed(value: object) -> object:
    """What ``json.dumps`` writes for a projected array (a float64 array): its list."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")
