"""Typed documents: a dataclass gives the documents of an endpoint a shape, as a dataclass
annotated on ``parameters`` gives its parameters one (:mod:`meshflow.executor.parameters`).

::

    @dataclass
    class ProductQuery:
        \"\"\"What a shopper searches with.\"\"\"
        text: str | None = None
        image: str | None = doc_field("blob")          # base64, travels as the Document's blob

    @dataclass
    class Product:
        id: str
        title: str = doc_field("text", default="")      # the Document's text
        category: str = ""                        # tags["category"]
        price: float | None = None                # tags["price"]
        score: float | None = doc_field("scores.fused")

    @dataclass
    class Look:
        id: str
        matches: list[Product] = field(default_factory=list)

    class Shop(Executor):
        @requests(on='/search', read_only=True, doc=ProductQuery, returns=Look)
        def search(self, docs, parameters: SearchParams, **kwargs): ...

The gateway turns these into named GraphQL types (``Product``, ``ProductQueryInput``...) and
checks inputs against them before any executor runs; a read-only endpoint becomes a query
field (``search(docs: [ProductQueryInput!], limit: Int): [Look!]!``), any other a mutation.
The executor still gets Documents: on the wire nothing changes. Each field travels as

- the Document field of its name: ``id``, ``parent_id``, ``text``, ``uri``, ``mime_type``,
  ``blob`` (base64 in GraphQL);
- ``matches`` or ``chunks``, typed ``list[SomeDataclass]``: nested typed documents;
- where :func:`doc_field` says: a Document field, ``"tags.<key>"``, ``"scores.<name>"`` (one
  score, a float) or ``"scores"`` (all of them, JSON);
- else ``tags[<name>]``.

Field types: ``str``, ``int``, ``float``, ``bool``, lists of them, ``dict``/``Any`` (JSON),
each optionally ``| None``. The class name is the GraphQL type name: two executors may
declare the same name only with the same fields (a Flow refuses to start otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from meshflow.executor.parameters import field_default
from meshflow.proto.v1 import services_pb2

DOC_FIELDS = ("id", "parent_id", "text", "uri", "mime_type", "blob")
"""Document fields a typed field can travel as (besides tags, scores, matches, chunks)."""
NESTED = ("matches", "chunks")
_SCALARS: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool"}
_JSON = (dict, typing.Any, object)
WIRE_KEY = "meshflow.source"


def doc_field(source: str, *, default: Any = None, description: str = "") -> Any:
    """A typed document field that travels as ``source``: a Document field (``"text"``,
    ``"uri"``...), ``"tags.<key>"``, ``"scores.<name>"`` or ``"scores"``. ``default`` is its
    value when the Document has none (and what an input may leave out)::

        title: str = doc_field("text", default="")
    """
    check_source(source, where=f"doc_field({source!r})")
    metadata = {WIRE_KEY: source, "description": description}
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_source(source: str, *, where: str) -> None:
    head, dot, key = source.partition(".")
    ok = (not dot and source in (*DOC_FIELDS, "scores")) or (
        dot and head in ("tags", "scores") and bool(key)
    )
    if not ok:
        raise TypeError(
            f"{where}: {source!r} is not where a field can travel; use one of "
            f"{', '.join(DOC_FIELDS)}, 'tags.<key>', 'scores.<name>' or 'scores'"
        )


def check_doc_type(cls: Any, *, what: str) -> type:
    """``cls`` if it is a dataclass fit for a typed document; TypeError saying why not."""
    describe_doc_type(cls, what=what)
    return typing.cast(type, cls)


def describe_doc_type(
    cls: Any, *, what: str = "", _within: tuple[type, ...] = ()
) -> services_pb2.DocType:
    """The ``DocType`` message of the dataclass ``cls`` (what the Endpoints RPC tells)."""
    qualname = getattr(cls, "__qualname__", repr(cls))
    where = f"{what}: {qualname}" if what else qualname
    if cls in _within:
        raise TypeError(
            f"{where}: {cls.__name__} nests itself; typed matches and chunks must be "
            "another dataclass (GraphQL types are finite)"
        )
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{where}: typed documents are dataclasses, got {cls!r}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:
        raise TypeError(
            f"{where}: cannot resolve the annotations of {cls.__name__}: {exc}"
        ) from None
    out = services_pb2.DocType(name=cls.__name__, description=_doc(cls))
    for f in dataclasses.fields(cls):
        out.fields.append(_field(f, hints[f.name], where, (*_within, cls)))
    return out


def _doc(cls: type) -> str:
    doc = cls.__doc__ or ""
    # a dataclass without a docstring gets its signature as __doc__: not a description
    return "" if doc.startswith(cls.__name__ + "(") else doc.strip()


def _field(
    f: dataclasses.Field[Any], hint: Any, where: str, within: tuple[type, ...]
) -> services_pb2.DocField:
    name = f"{where}.{f.name}"
    if not f.name.isidentifier() or f.name.startswith("_"):
        raise TypeError(f"{name}: a typed field needs a public name")
    source = f.metadata.get(WIRE_KEY) or (f.name if f.name in (*DOC_FIELDS, *NESTED) else "")
    source = source or f"tags.{f.name}"
    required, default = field_default(f)
    kind, is_list, nested = _kind(hint)
    if kind is None and nested is None:
        raise TypeError(
            f"{name}: {hint!r} is not a typed field type; use str, int, float, bool, a list "
            "of them, or dict/Any for JSON"
        )
    try:
        default_json = "" if required or nested is not None else json.dumps(default)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: its default {default!r} is not JSON") from None
    out = services_pb2.DocField(
        nullable=_nullable(hint),
        name=f.name,
        list=is_list,
        required=required,
        source=source,
        description=str(f.metadata.get("description", "")),
        default_json=default_json,
    )
    if nested is not None:
        if source not in NESTED:
            raise TypeError(
                f"{name}: a list of typed documents travels as 'matches' or 'chunks'; "
                f"name the field so, or type it dict/Any (JSON)"
            )
        out.type = "doc"
        out.doc.CopyFrom(describe_doc_type(nested, what=name, _within=within))
        return out
    if source in NESTED:
        raise TypeError(f"{name}: {source} holds typed documents: type it list[SomeDataclass]")
    if source in DOC_FIELDS and (kind != "str" or is_list):
        raise TypeError(f"{name}: travels as the Document's {source}, a string: type it str")
    if source.startswith("scores.") and (kind != "float" or is_list):
        raise TypeError(f"{name}: a score is a number: type it float")
    if source == "scores" and kind != "json":
        raise TypeError(f"{name}: all scores are a JSON object: type it dict[str, float]")
    out.type = "id" if source == "id" else str(kind)
    return out


def _nullable(hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(hint)
    return hint is typing.Any or hint is object


def _kind(hint: Any) -> tuple[str | None, bool, type | None]:
    """(scalar kind or None, is a list, nested dataclass)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else ("json", False, None)
    if origin in (list, tuple, set, frozenset):
        items = typing.get_args(hint)
        item = items[0] if items else Any
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            return None, True, item
        inner = _SCALARS.get(item)
        if inner is None and (item in _JSON or typing.get_origin(item) is dict):
            inner = "json"
        return inner, True, None
    if hint in _SCALARS:
        return _SCALARS[hint], False, None
    if hint in _JSON or origin is dict:
        return "json", False, None
    return None, False, None
