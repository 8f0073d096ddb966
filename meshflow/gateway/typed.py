"""Named GraphQL types for typed documents, and the query and mutation fields of typed
endpoints (see :mod:`meshflow.executor.doctypes` for how executors declare them).

``@requests(on='/search', read_only=True, doc=ProductQuery, returns=Look)`` becomes::

    input ProductQueryInput { text: String image: String }
    type Look { id: ID! matches: [Product!]! }
    type Product { id: ID! title: String! category: String! price: Float score: Float }
    type Query { search(docs: [ProductQueryInput!], limit: Int, ...): [Look!]! }

Inputs are checked by GraphQL itself before any resolver runs (a wrong type in variables is
``BAD_USER_INPUT``, in the query text ``GRAPHQL_VALIDATION_FAILED``), then turned into the
same Documents a ``post`` sends (tags for the fields that travel as tags). Answers are read
from the answer's protobuf messages field by field, as the generic ``Document`` type does,
and only the Document fields the query selects travel back from the executors.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from typing import Any

import strawberry
import strawberry.federation
from google.protobuf import struct_pb2
from graphql import GraphQLError
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from meshflow.errors import ConfigError, ExecutorError, RequestError
from meshflow.gateway.doctypes import TypedDocuments, TypedEndpoint, typed_documents
from meshflow.gateway.graphql import (
    DocumentInput as GenericInput,
)
from meshflow.gateway.graphql import (
    Mutation,
    _caller,
    _gateway,
    endpoint_resolver,
    field_name,
    query_type,
    read_only_endpoints,
    request_error,
)
from meshflow.gateway.post import DocumentInput, answer_string, charge_answer, run_post
from meshflow.proto.v1 import document_pb2, services_pb2

log = logging.getLogger("meshflow.gateway")

_SCALARS: dict[str, Any] = {
    "id": strawberry.ID,
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "json": JSON,
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class TypeRegistry:
    """The Strawberry classes of one schema's typed documents, made once per name."""

    def __init__(self, typed: TypedDocuments, entities: Iterable[str] = ()) -> None:
        self.typed = typed
        self.entities = frozenset(entities)
        self.objects: dict[str, type] = {}
        self.inputs: dict[str, type] = {}
        self.sources: dict[str, dict[str, services_pb2.DocField]] = {}
        """Per object type: GraphQL field name -> its declaration (for selection pushdown)."""

    # -- answers --------------------------------------------------------------------------

    def object_type(self, name: str) -> type:
        known = self.objects.get(name)
        if known is not None:
            return known
        doc_type = self.typed.types[name]
        private: Any = strawberry.Private
        annotations: dict[str, Any] = {"_pb": private[Any]}
        namespace: dict[str, Any] = {"__annotations__": annotations}
        sources: dict[str, services_pb2.DocField] = {}
        for f in doc_type.fields:
            sources[_camel(f.name)] = f
            namespace[f.name] = strawberry.field(
                resolver=self._reader(name, f),
                description=f.description or None,
            )
        cls = type(name, (), namespace)
        self.sources[name] = sources
        description = doc_type.description or None
        if name in self.entities:
            decorated = strawberry.federation.type(
                cls, name=name, description=description, keys=["id"]
            )
        else:
            decorated = strawberry.type(cls, name=name, description=description)
        self.objects[name] = decorated
        return decorated

    def _reader(self, type_name: str, f: services_pb2.DocField) -> Any:
        nested = self.object_type(f.doc.name) if f.type == "doc" else None
        default = json.loads(f.default_json) if f.default_json else None
        nullable = f.nullable or (not f.required and default is None)

        def read(self: Any) -> Any:
            pb: document_pb2.Document = self._pb
            if nested is not None:
                return [nested(_pb=d) for d in getattr(pb, f.source)]
            value = _value(pb, f.source)
            if value is None:
                if default is None and not nullable:
                    raise _bad_answer(pb, type_name, f, "has none")
                return default
            return _coerce(value, f, pb, type_name)

        annotation: Any
        if nested is not None:
            annotation = list[nested]  # type: ignore[valid-type]
        else:
            kind = _SCALARS[f.type]
            annotation = list[kind] if f.list else kind  # type: ignore[valid-type]
            if nullable:
                annotation = annotation | None
        read.__annotations__ = {"return": annotation}
        read.__name__ = f"read_{f.name}"
        return read

    # -- inputs ---------------------------------------------------------------------------

    def input_type(self, name: str) -> type:
        known = self.inputs.get(name)
        if known is not None:
            return known
        doc_type = self.typed.types[name]
        annotations: dict[str, Any] = {}
        namespace: dict[str, Any] = {"__annotations__": annotations}
        for f in doc_type.fields:
            if f.type == "doc" or f.source.startswith("scores"):
                continue  # answers only
            kind = _SCALARS[f.type]
            annotation: Any = list[kind] if f.list else kind  # type: ignore[valid-type]
            optional = f.nullable or not f.required
            if optional:
                annotation = annotation | None
            annotations[f.name] = annotation
            description = f.description or None
            namespace[f.name] = (
                strawberry.field(default=None, description=description)
                if optional
                else strawberry.field(description=description)
            )
        cls = type(f"{name}Input", (), namespace)
        decorated = strawberry.input(
            cls, name=f"{name}Input", description=doc_type.description or None
        )
        self.inputs[name] = decorated
        return decorated

    def to_document(self, name: str, value: Any) -> DocumentInput:
        """The Document a typed input travels as."""
        fields: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        for f in self.typed.types[name].fields:
            if f.type == "doc" or f.source.startswith("scores"):
                continue
            given = getattr(value, f.name, None)
            if given is None or given is strawberry.UNSET:
                continue
            if f.source.startswith("tags."):
                tags[f.source[5:]] = given
            else:
                fields[f.source] = str(given)
        return DocumentInput(**fields, tags=tags or None)

    # -- selection pushdown ---------------------------------------------------------------

    def wanted(self, type_name: str, selections: Iterable[Selection], prefix: str = "") -> set[str]:
        """The Document field paths a selection of ``type_name`` reads."""
        out = {prefix + "id"}
        sources = self.sources.get(type_name, {})
        for sel in selections:
            if isinstance(sel, FragmentSpread | InlineFragment):
                out |= self.wanted(type_name, sel.selections, prefix)
                continue
            if not isinstance(sel, SelectedField):
                continue
            f = sources.get(sel.name)
            if f is None:
                continue
            head = f.source.partition(".")[0]
            out.add(prefix + head)
            if f.type == "doc":
                out |= self.wanted(f.doc.name, sel.selections, f"{prefix}{head}.")
        return out

    # -- root fields ----------------------------------------------------------------------

    def root_field(self, endpoint: TypedEndpoint) -> Any:
        out_cls = self.object_type(endpoint.returns)
        in_cls = self.input_type(endpoint.doc) if endpoint.doc else None
        registry = self
        kind = "query" if endpoint.read_only else "mutation"

        async def resolve(self: Any, info: Info[Any, Any], **kwargs: Any) -> Any:
            given = kwargs.pop("docs", None) or []
            target = kwargs.pop("target_executor", None)
            parameters = {k: v for k, v in kwargs.items() if v is not None}
            if endpoint.doc is not None:
                docs = [registry.to_document(endpoint.doc, d) for d in given]
            else:
                docs = [_generic(d) for d in given]
            wanted: set[str] = set()
            for selected in info.selected_fields:
                wanted |= registry.wanted(endpoint.returns, selected.selections)
            try:
                answer = await run_post(
                    _gateway(info),
                    on=endpoint.name,
                    docs=docs,
                    parameters=parameters or None,
                    target_executor=target,
                    fields=wanted,
                    max_docs=info.context["max_docs"],
                    max_answer_bytes=info.context.get("max_answer_bytes"),
                    **_caller(info),
                )
            except RequestError as exc:
                raise request_error(exc) from None
            return [out_cls(_pb=d) for d in answer.docs]

        docs_type: Any = list[in_cls] if in_cls is not None else list[GenericInput]  # type: ignore[valid-type]
        endpoint_resolver(
            resolve,
            endpoint.name,
            endpoint.parameters,
            docs=docs_type,
            returns=list[out_cls],  # type: ignore[valid-type]
        )
        description = f"Runs the typed {kind} endpoint {endpoint.name} of the Flow."
        if endpoint.read_only:
            return strawberry.field(resolver=resolve, description=description)
        return strawberry.mutation(resolver=resolve, description=description)


def _generic(doc: Any) -> Any:
    return doc  # a generic DocumentInput is what run_post takes already


def _value(pb: document_pb2.Document, source: str) -> Any:
    head, _, key = source.partition(".")
    if head == "tags":
        if not pb.HasField("tags") or key not in pb.tags.fields:
            return None
        value = pb.tags.fields[key]
        charge_answer(value.ByteSize())  # each alias writes it again
        return _plain(value)
    if head == "scores":
        if not key:
            return dict(pb.scores)
        return pb.scores.get(key)
    if head == "blob":
        return answer_string(base64.b64encode(pb.blob).decode("ascii")) if pb.blob else None
    value = getattr(pb, head)
    if isinstance(value, str):
        answer_string(value)
    return value if value != "" or head == "id" else None


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "null_value" or kind is None:
        return None
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return getattr(value, kind)


def _coerce(value: Any, f: services_pb2.DocField, pb: document_pb2.Document, type_name: str) -> Any:
    """An answer's value as its declared type (tags' numbers arrive as floats)."""
    if f.type == "json":
        return value
    if f.list:
        if not isinstance(value, list):
            raise _bad_answer(pb, type_name, f, f"is {value!r}, not a list")
        return [_scalar(v, f, pb, type_name) for v in value]
    return _scalar(value, f, pb, type_name)


def _scalar(value: Any, f: services_pb2.DocField, pb: document_pb2.Document, type_name: str) -> Any:
    kind = f.type
    if kind in ("str", "id") and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "int" and number and float(value).is_integer():
        return int(value)
    raise _bad_answer(pb, type_name, f, f"is {value!r}, not a {kind}")


def _bad_answer(
    pb: document_pb2.Document, type_name: str, f: services_pb2.DocField, what: str
) -> GraphQLError:
    error = ExecutorError(
        f"document {pb.id!r}: {f.source} {what}, as {type_name}.{f.name} declares; "
        "the executor answered a document that does not fit its declared type"
    )
    return request_error(error)


def typed_schema_types(
    read_only: dict[str, dict[str, services_pb2.Parameter]],
    typed: TypedDocuments,
    entities: Iterable[str] = (),
) -> tuple[type, type, TypeRegistry]:
    """``Query`` (``flow``, a field per read-only endpoint: typed ones return their types)
    and ``Mutation`` (``post``, a field per typed endpoint that is not read-only)."""
    registry = TypeRegistry(typed, entities)
    queries: dict[str, Any] = {}
    mutations: dict[str, Any] = {}
    for endpoint in typed.endpoints.values():
        name = field_name(endpoint.name)
        if name is None or (not endpoint.read_only and name == "post"):
            continue
        (queries if endpoint.read_only else mutations)[name] = registry.root_field(endpoint)
    for name in registry.typed.outputs:  # types reached only through federation too
        registry.object_type(name)
    query = query_type(read_only, extra=queries)
    if not mutations:
        return query, Mutation, registry
    mutation = strawberry.type(type("Mutation", (Mutation,), mutations), name="Mutation")
    return query, mutation, registry


def schema_key(
    answers: Iterable[services_pb2.EndpointsResponse],
) -> tuple[dict[str, dict[str, services_pb2.Parameter]], TypedDocuments]:
    """What the schema is built from: the read-only endpoints and the typed documents. A
    conflict between executors' typed documents (which a Flow refuses before it starts) is
    logged, and the typed fields are left out until the executors agree."""
    answers = list(answers)
    try:
        typed = typed_documents(answers)
    except ConfigError as exc:
        log.error("typed documents left out of the GraphQL schema: %s", exc)
        typed = TypedDocuments()
    return read_only_endpoints(answers), typed
