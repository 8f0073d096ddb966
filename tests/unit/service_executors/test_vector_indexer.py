"""VectorIndexer in-process: index, search with filters, update, delete, count, persistence,
exact and HNSW indexes."""

from __future__ import annotations

import os
import sqlite3
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


# -- several spaces: one per modality, vectors on chunks ------------------------------------


def multimodal(n: int, seed: int = 0) -> DocumentArray:
    """Products with an 8-d image chunk and a 4-d text chunk (every third has no image)."""
    rng = np.random.default_rng(seed)
    docs = DocumentArray()
    for i in range(n):
        chunks = [Document(tags={"modality": "text"}, embedding=rng.standard_normal(4))]
        if i % 3:
            chunks.append(Document(tags={"modality": "image"}, embedding=rng.standard_normal(8)))
        docs.append(Document(id=f"p{i}", text=f"p {i}", tags={"k": i % 2}, chunks=chunks))
    return docs


def chunk(doc: Document, modality: str) -> Document:
    [found] = [c for c in doc.chunks if c.tags["modality"] == modality]
    return found


def spaces_index(workspace: str) -> VectorIndexer:
    return make(workspace, spaces={"image": 8, "text": 4})


def test_spaces_put_each_modalitys_matches_on_its_chunk(workspace: str) -> None:
    index = spaces_index(workspace)
    docs = multimodal(12)
    assert index.index_docs(docs) == {"indexed": 12}
    image = chunk(docs[4], "image").embedding
    text = chunk(docs[7], "text").embedding
    queries = DocumentArray(
        [
            Document(
                chunks=[
                    Document(tags={"modality": "image"}, embedding=image),
                    Document(tags={"modality": "text"}, embedding=text),
                ]
            )
        ]
    )
    index.search(queries, SearchParams(limit=3))
    q = queries[0]
    assert chunk(q, "image").matches[0].id == "p4"
    assert chunk(q, "text").matches[0].id == "p7"
    assert not q.matches  # nothing in the "" space
    # p0, p3, p6, p9 have no image vector: never an image match
    image_ids = {m.id for m in chunk(q, "image").matches}
    assert not image_ids & {"p0", "p3", "p6", "p9"}
    # a filter applies per space
    queries = DocumentArray(
        [Document(chunks=[Document(tags={"modality": "text"}, embedding=text)])]
    )
    index.search(queries, SearchParams(limit=10, filter={"k": 0}))
    assert {m.tags["k"] for m in chunk(queries[0], "text").matches} == {0}
    assert len(chunk(queries[0], "text").matches) == 6


def test_spaces_update_one_modality_and_survive_a_restart(workspace: str) -> None:
    index = spaces_index(workspace)
    docs = multimodal(6)
    index.index_docs(docs)
    new_text = np.asarray(chunk(docs[5], "text").embedding) * -1.0
    index.update(
        DocumentArray(
            [Document(id="p1", chunks=[Document(tags={"modality": "text"}, embedding=new_text)])]
        )
    )
    reopened = spaces_index(workspace)
    assert reopened.count() == {"count": 6}
    for idx in (index, reopened):
        queries = DocumentArray(
            [
                Document(
                    chunks=[
                        Document(tags={"modality": "text"}, embedding=new_text),
                        Document(
                            tags={"modality": "image"}, embedding=chunk(docs[1], "image").embedding
                        ),
                    ]
                )
            ]
        )
        idx.search(queries, SearchParams(limit=1))
        assert chunk(queries[0], "text").matches[0].id == "p1"  # the new text vector
        assert chunk(queries[0], "image").matches[0].id == "p1"  # the image one is kept
    reopened.delete(DocumentArray([Document(id="p1")]))
    queries = DocumentArray(
        [Document(chunks=[Document(tags={"modality": "text"}, embedding=new_text)])]
    )
    reopened.search(queries, SearchParams(limit=6))
    assert "p1" not in chunk(queries[0], "text").matches.ids


def test_spaces_refuse_documents_without_a_known_vector(workspace: str) -> None:
    index = spaces_index(workspace)
    with pytest.raises(ValueError, match="no embedding in any space"):
        index.index_docs(DocumentArray([Document(id="x", embedding=np.ones(8))]))
    with pytest.raises(ValueError, match="space 'image' of this index is 8-d"):
        index.index_docs(
            DocumentArray(
                [
                    Document(
                        id="y", chunks=[Document(tags={"modality": "image"}, embedding=np.ones(3))]
                    )
                ]
            )
        )
    with pytest.raises(ValueError, match="positive integer size"):
        make(workspace, spaces={"image": 0})
    assert index.count() == {"count": 0}


def ids_found(index: VectorIndexer, docs: DocumentArray) -> list[str]:
    queries = DocumentArray(Document(embedding=d.embedding) for d in docs)
    index.search(queries, SearchParams(limit=1))
    return [q.matches[0].id if len(q.matches) else "" for q in queries]


def test_replicas_sharing_a_workspace_see_each_others_writes(workspace: str) -> None:
    one, two = make(workspace), make(workspace)
    docs = catalog(40)
    one.index_docs(docs[:20])
    two.index_docs(docs[20:])
    assert ids_found(one, docs) == docs.ids == ids_found(two, docs)
    assert one.count() == two.count() == {"count": 40}

    moved = Document(id="item-3", embedding=docs[30].embedding)
    two.update(DocumentArray([moved]))
    two.delete(DocumentArray([Document(id="item-5")]))
    found = ids_found(one, DocumentArray([docs[5], docs[30]]))
    assert "item-5" not in found
    q = DocumentArray([Document(embedding=docs[30].embedding)])
    one.search(q, SearchParams(limit=2))
    assert {m.id for m in q[0].matches} == {"item-3", "item-30"}
    with pytest.raises(KeyError, match="item-5"):
        one.update(DocumentArray([Document(id="item-5", text="x")]))
    assert one.count() == {"count": 39}


def test_a_replica_behind_the_change_log_rebuilds(workspace: str) -> None:
    one, two = make(workspace, log_size=5), make(workspace, log_size=5)
    docs = catalog(30)
    for start in range(0, 30, 3):  # 10 writes of 3 rows: the log keeps the last 5 changes
        one.index_docs(docs[start : start + 3])
    assert ids_found(two, docs) == docs.ids
    (logged,) = two.db.execute("SELECT COUNT(*) FROM changes").fetchone()
    assert logged == 5


def test_hnsw_replicas_catch_up_with_deletes(workspace: str) -> None:
    one, two = make(workspace, hnsw_threshold=10), make(workspace, hnsw_threshold=10)
    docs = catalog(30)
    one.index_docs(docs)
    assert ids_found(two, docs[:5]) == docs.ids[:5] and two.hnsw
    one.delete(DocumentArray([Document(id="item-2")]))
    assert "item-2" not in ids_found(two, docs[:5])


def test_a_replica_catches_up_with_more_rows_than_sqlite_takes_parameters(
    workspace: str,
) -> None:
    one, two = make(workspace), make(workspace)
    two.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)  # SQLite's usual default
    docs = catalog(40_000, seed=3)
    one.index_docs(docs)
    assert ids_found(two, docs[::4_000]) == docs.ids[::4_000]
