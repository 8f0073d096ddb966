"""Executors with typed documents, for tests/integration/test_graphql_typed.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshflow import DocumentArray, Executor, doc_field, requests

CATALOG = {
    "p1": {"title": "Red dress", "category": "dress", "colour": "red", "price": 49.5},
    "p2": {"title": "Blue shoes", "category": "shoes", "colour": "blue", "price": 80.0},
    "p3": {"title": "Red shoes", "category": "shoes", "colour": "red", "price": 65.0},
}


@dataclass
class ProductQuery:
    """What a shopper searches with."""

    text: str | None = None
    colour: str | None = None


@dataclass
class Product:
    """A product of the catalog."""

    id: str
    title: str = doc_field("text", default="")
    category: str = ""
    colour: str = ""
    price: float | None = None
    stock: int = 0
    score: float | None = doc_field("scores.match")


@dataclass
class Look:
    """A query and the products it matched."""

    id: str
    text: str | None = None
    matches: list[Product] = field(default_factory=list)


@dataclass
class NewProduct:
    id: str
    title: str = doc_field("text", default="")
    category: str = ""
    price: float | None = None
    stock: int = 0


@dataclass
class SearchParams:
    limit: int = 10


class Shop(Executor):
    """Searches ``CATALOG`` by words and colour; stores new products in memory."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.catalog = {k: dict(v) for k, v in CATALOG.items()}

    @requests(on="/search", read_only=True, doc=ProductQuery, returns=Look)
    def search(self, docs: DocumentArray, parameters: SearchParams, **kwargs: Any) -> None:
        for doc in docs:
            words = set((doc.text or "").lower().split())
            colour = doc.tags.get("colour")
            found = DocumentArray()
            for key, item in self.catalog.items():
                hits = len(words & set(item["title"].lower().split()))
                if colour and item.get("colour") != colour:
                    continue
                if hits or not words:
                    match = _document(key, item)
                    match.scores["match"] = float(hits)
                    found.append(match)
            found = DocumentArray(sorted(found, key=lambda d: -d.scores["match"]))
            doc.matches = found[: parameters.limit]

    @requests(on="/products", read_only=True, returns=Product)
    def products(self, docs: DocumentArray, **kwargs: Any) -> DocumentArray:
        """The products of the ids asked that exist (the entity resolver of federation)."""
        return DocumentArray(
            _document(doc.id, self.catalog[doc.id]) for doc in docs if doc.id in self.catalog
        )

    @requests(on="/add", doc=NewProduct, returns=Product)
    def add(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            self.catalog[doc.id] = {"title": doc.text, **doc.tags}
            doc.tags["stored"] = True

    @requests(on="/broken", read_only=True, returns=Product)
    def broken(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.tags["price"] = "expensive"  # not the float Product.price declares


def _document(key: str, item: dict[str, Any]) -> Any:
    from meshflow import Document

    tags = {k: v for k, v in item.items() if k != "title"}
    return Document(id=key, text=item["title"], tags=tags)


@dataclass
class Product2:
    id: str


class OtherShop(Executor):
    """Declares another ``Product``: a Flow with both refuses to start."""

    @dataclass
    class Product:
        id: str
        title: int = 0

    @requests(on="/other", read_only=True, returns=Product)
    def other(self, docs: DocumentArray, **kwargs: Any) -> None:
        pass
