"""Typed documents as executors declare them: where each field travels, and declarations
refused at import time with a message that says what to write instead."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from meshflow import DocumentArray, Executor, doc_field, requests
from meshflow.executor.describe import describe_endpoints
from meshflow.executor.doctypes import describe_doc_type


@dataclass
class Product:
    """A product."""

    id: str
    title: str = doc_field("text", default="")
    uri: str | None = None
    category: str = ""
    sizes: list[str] = field(default_factory=list)
    price: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    score: float | None = doc_field("scores.fused")
    label: str | None = doc_field("tags.brand")


@dataclass
class Look:
    id: str
    matches: list[Product] = field(default_factory=list)


def test_each_field_travels_as_its_document_field_a_tag_or_a_score() -> None:
    described = describe_doc_type(Product)
    assert described.name == "Product" and described.description == "A product."
    where = {f.name: (f.source, f.type, f.list, f.required, f.nullable) for f in described.fields}
    assert where == {
        "id": ("id", "id", False, True, False),
        "title": ("text", "str", False, False, False),
        "uri": ("uri", "str", False, False, True),
        "category": ("tags.category", "str", False, False, False),
        "sizes": ("tags.sizes", "str", True, False, False),
        "price": ("tags.price", "float", False, False, True),
        "extra": ("tags.extra", "json", False, False, False),
        "score": ("scores.fused", "float", False, False, True),
        "label": ("tags.brand", "str", False, False, True),
    }
    nested = describe_doc_type(Look).fields[1]
    assert (nested.source, nested.type, nested.doc.name) == ("matches", "doc", "Product")


def test_the_endpoints_rpc_tells_the_typed_documents() -> None:
    class Shop(Executor):
        @requests(on="/search", read_only=True, doc=Product, returns=Look)
        def search(self, docs: DocumentArray, **kwargs: Any) -> None:
            pass

        @requests(on="/index")
        def index(self, docs: DocumentArray, **kwargs: Any) -> None:
            pass

    endpoints = {e.name: e for e in describe_endpoints("shop", Shop.endpoints).endpoints}
    assert endpoints["/search"].doc.name == "Product"
    assert endpoints["/search"].returns.name == "Look"
    assert not endpoints["/index"].HasField("doc") and not endpoints["/index"].HasField("returns")


@dataclass
class NotScalar:
    id: str
    when: complex = 0j


@dataclass
class NestedAsTag:
    id: str
    related: list[Product] = field(default_factory=list)


@dataclass
class NumberText:
    id: str
    text: int = 0


@dataclass
class TextScore:
    id: str
    score: str = doc_field("scores.fused", default="")


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (dict, "typed documents are dataclasses"),
        (NotScalar, "NotScalar.when: <class 'complex'> is not a typed field type"),
        (NestedAsTag, "travels as 'matches' or 'chunks'"),
        (NumberText, "travels as the Document's text, a string: type it str"),
        (TextScore, "a score is a number: type it float"),
    ],
)
def test_bad_declarations_are_refused_when_the_class_is_defined(cls: Any, message: str) -> None:
    with pytest.raises(TypeError, match=r"^@requests\(returns=\.\.\.\): ") as refused:
        requests(on="/x", returns=cls)
    assert message in str(refused.value)


def test_doc_field_refuses_an_unknown_place() -> None:
    with pytest.raises(TypeError, match="'embedding' is not where a field can travel"):
        doc_field("embedding")


@dataclass
class Outfit:
    id: str
    matches: list[Outfit] = field(default_factory=list)


def test_a_type_that_nests_itself_is_refused() -> None:
    with pytest.raises(TypeError, match="Outfit nests itself"):
        requests(on="/x", returns=Outfit)
