"""The shop-the-look app's typed documents and the two executors that declare them.

The reusable executors (:class:`~services.vector_indexer.VectorIndexer`,
:class:`~services.ranker.Ranker`) know nothing of products; the app's subclasses say what its
documents are, so that the gateway offers a typed search::

    query Search($docs: [LookQueryInput!], $limit: Int, $category: String) {
      search(docs: $docs, limit: $limit, category: $category) {
        matches { id title category colour pattern imageUrl score imageScore textScore }
      }
    }

On the wire nothing changes: a product's title is the Document's ``text``, its labels and
thumbnail are tags, its scores the ranker's ``scores``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshflow import DocumentArray, doc_field, requests
from services.ranker import Ranker
from services.ranker.executor import RankParams
from services.vector_indexer import VectorIndexer
from services.vector_indexer.executor import SearchParams

FILTERS = ("category", "colour", "pattern")


@dataclass
class LookQuery:
    """A search: some words, a photo, or both."""

    text: str | None = None
    image: str | None = doc_field("blob", description="A photo (JPEG or PNG), base64.")


@dataclass
class Product:
    """A catalog item as a search finds it."""

    id: str
    title: str = doc_field("text", default="", description="Its description.")
    category: str | None = None
    colour: str | None = None
    pattern: str | None = None
    image_url: str | None = doc_field("tags.image_url", description="Its thumbnail's URL.")
    file: str | None = doc_field("tags.file", description="Indexed from a folder: its path.")
    score: float | None = doc_field("scores.fused", description="The ranker's fused score.")
    image_score: float | None = doc_field("scores.image", description="Photo similarity.")
    text_score: float | None = doc_field("scores.text", description="Words similarity.")


@dataclass
class Look:
    """One search and the products it found, best first."""

    id: str
    matches: list[Product] = field(default_factory=list)


@dataclass
class ShopFilters(SearchParams):
    """``/search`` parameters of the indexer: the generic tag ``filter`` and typed labels."""

    category: str | None = None
    colour: str | None = None
    pattern: str | None = None


class ShopIndexer(VectorIndexer):
    """The catalog's index, with typed filters (``category``, ``colour``, ``pattern``)."""

    @requests(on="/search", read_only=True)
    def search(self, docs: DocumentArray, parameters: ShopFilters, **kwargs: Any) -> None:  # type: ignore[override]
        wanted = {k: getattr(parameters, k) for k in FILTERS if getattr(parameters, k)}
        plain = SearchParams(limit=parameters.limit, filter={**parameters.filter, **wanted})
        super().search(docs, plain, **kwargs)


class ShopRanker(Ranker):
    """The ranker of the app: declares what a search takes (``LookQuery``) and answers
    (``Look``, its ``matches`` typed ``Product``)."""

    @requests(on="/search", read_only=True, doc=LookQuery, returns=Look)
    def rank(self, docs: DocumentArray, parameters: RankParams, **kwargs: Any) -> None:
        super().rank(docs, parameters, **kwargs)
