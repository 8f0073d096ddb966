"""VectorIndexer in-process: index, search with filters, update, delete, count, persistence,
exact and HNSW indexes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from meshflow import Document, DocumentArray, RuntimeArgs
from services.vector_indexer import SearchParams, VectorIndexer

DIM = 16


def make(workspace: str, **kwargs: Any) -> VectorIndexer:
    """An indexer whose workspace is under ``workspace`` (as a Flow would set it up)."""
    indexer = VectorIndexer.__new__(VectorIndexer)
    indexer._runtime_args = RuntimeArgs(name="index", workspace_root=workspace)
    indexer.__init__(dim=DIM, **kwargs)  # type: ignore[misc]
    return indexer


@pytest.fixture
def workspace(tmp_path: Any) -> str:
    return str(tmp_path)


def catalog(n: int, seed: int = 0) -> DocumentArray:
    rng = np.random.default_rng(seed)
    return DocumentArray(
        Document(
            id=f"item-{i}",
            text=f"item {i}",
            embedding=rng.standard_normal(DIM).astype(np.float32),
            tags={"category": ["shoes", "coats"][i % 2], "rank": i},
        )
        for i in range(n)
    )


def query_for(doc: Document) -> DocumentArray:
    return DocumentArray([Document(embedding=np.asarray(doc.embedding) * 3.0)])


def test_index_search_count(workspace: str) -> None:
    index = make(workspace)
    docs = catalog(20)
    assert index.index_docs(docs) == {"indexed": 20}
    assert index.count() == {"count": 20}
    queries = query_for(docs[7])
    index.search(queries, SearchParams(limit=3))
    matches = queries[0].matches
    assert matches[0].id == "item-7" and matches[0].scores["cosine"] == pytest.approx(1.0)
    assert matches[0].tags["category"] == "coats" and matches[0].text == "item 7"
    assert len(matches) == 3 and matches[0].embedding is None  # no vectors in answers
    scores = [m.scores["cosine"] for m in matches]
    assert scores == sorted(scores, reverse=True)


def test_tag_filters(workspace: str) -> None:
    index = make(workspace)
    docs = catalog(20)
    index.index_docs(docs)
    queries = query_for(docs[7])  # a coat
    index.search(queries, SearchParams(limit=5, filter={"category": "shoes"}))
    assert len(queries[0].matches) == 5
    assert {m.tags["category"] for m in queries[0].matches} == {"shoes"}
    queries = query_for(docs[7])
    index.search(queries, SearchParams(limit=5, filter={"category": "hats"}))
    assert len(queries[0].matches) == 0


def test_update_delete_and_reindex(workspace: str) -> None:
    index = make(workspace)
    docs = catalog(10)
    index.index_docs(docs)
    moved = Document(id="item-3", tags={"category": "hats"}, embedding=docs[5].embedding)
    assert index.update(DocumentArray([moved])) == {"updated": 1}
    queries = query_for(docs[5])
    index.search(queries, SearchParams(limit=2))
    assert {m.id for m in queries[0].matches} == {"item-3", "item-5"}
    assert index.delete(DocumentArray([Document(id="item-5"), Document(id="nope")])) == {
        "deleted": 1
    }
    queries = query_for(docs[5])
    index.search(queries, SearchParams(limit=1))
    assert queries[0].matches[0].id == "item-3"
    assert queries[0].matches[0].tags["category"] == "hats"
    assert queries[0].matches[0].tags["rank"] == 3  # tags merged, not replaced
    index.index_docs(DocumentArray([Document(id="item-3", embedding=docs[0].embedding)]))
    assert index.count() == {"count": 9}
    with pytest.raises(KeyError, match="item-42"):
        index.update(DocumentArray([Document(id="item-42")]))


def test_bad_embeddings_are_refused(workspace: str) -> None:
    index = make(workspace)
    with pytest.raises(ValueError, match="no embedding"):
        index.index_docs(DocumentArray([Document(id="x")]))
    with pytest.raises(ValueError, match="3-d embedding; this index is 16-d"):
        index.index_docs(DocumentArray([Document(id="x", embedding=np.ones(3))]))
    assert index.count() == {"count": 0}


def test_everything_survives_a_restart(workspace: str) -> None:
    index = make(workspace)
    docs = catalog(12)
    index.index_docs(docs)
    index.delete(DocumentArray([Document(id="item-0")]))
    again = make(workspace)
    assert again.count() == {"count": 11}
    queries = query_for(docs[4])
    again.search(queries, SearchParams(limit=1))
    assert queries[0].matches[0].id == "item-4"
    assert os.path.exists(os.path.join(workspace, "index", "index.sqlite"))


def test_hnsw_above_the_threshold(workspace: str) -> None:
    index = make(workspace, hnsw_threshold=50)
    docs = catalog(200, seed=1)
    index.index_docs(docs[:40])
    assert not index.hnsw
    index.index_docs(docs[40:])
    assert index.hnsw  # rebuilt as HNSW once past the threshold
    hits = 0
    for doc in docs[:50]:
        queries = query_for(doc)
        index.search(queries, SearchParams(limit=1))
        hits += queries[0].matches[0].id == doc.id
    assert hits >= 48  # approximate, but close to exact here
    index.delete(DocumentArray([docs[10]]))  # HNSW keeps the vector, searches skip it
    queries = query_for(docs[10])
    index.search(queries, SearchParams(limit=3))
    assert "item-10" not in {m.id for m in queries[0].matches}
    assert len(queries[0].matches) == 3
