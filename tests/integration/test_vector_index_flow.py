"""VectorIndexer in a Flow: 2 shards searched together, nothing acknowledged is lost when a
shard's process is killed with SIGKILL and restarted, and 2 shards x 2 replicas answer for
every document written (writes routed by id, replicas sharing their store, counts summed)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from meshflow import Document, DocumentArray, Flow, RequestError

DIM = 32
StartFlow = Callable[[Flow], Flow]


def catalog(n: int) -> DocumentArray:
    rng = np.random.default_rng(7)
    return DocumentArray(
        Document(
            id=f"p{i}",
            text=f"product {i}",
            embedding=rng.standard_normal(DIM).astype(np.float32),
            tags={"colour": ["red", "blue", "green"][i % 3]},
        )
        for i in range(n)
    )


@pytest.mark.mesh("direct")
def test_sharded_index_survives_sigkill(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow().add(
            uses="services.vector_indexer:VectorIndexer",
            name="index",
            uses_with={"dim": DIM},
            shards=2,
            polling={"/index": "ID", "/update": "ID", "/delete": "ID", "*": "ALL"},
        )
    )
    docs = catalog(60)
    acknowledged = 0
    for start in range(0, 60, 10):
        f.post("/index", docs[start : start + 10])
        acknowledged += 10
    # every document finds itself, whichever shard stores it
    queries = DocumentArray([Document(embedding=docs[i].embedding) for i in (0, 31, 59)])
    found = f.post("/search", queries, parameters={"limit": 1})
    assert [q.matches[0].id for q in found] == ["p0", "p31", "p59"]
    filtered = f.post(
        "/search",
        DocumentArray([Document(embedding=docs[0].embedding)]),
        parameters={"limit": 5, "filter": {"colour": "blue"}},
    )
    assert len(filtered[0].matches) == 5
    assert {m.tags["colour"] for m in filtered[0].matches} == {"blue"}
    scores = [m.scores["cosine"] for m in filtered[0].matches]
    assert scores == sorted(scores, reverse=True)  # both shards' matches, reduced by score

    # SIGKILL one shard's process right after acknowledged writes
    shard0 = f.describe()["deployments"][0]["replicas"][0]
    assert shard0["shard"] == 0
    os.kill(shard0["executor"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        try:
            again = f.post("/search", queries, parameters={"limit": 1})
            break
        except RequestError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert [q.matches[0].id for q in again] == ["p0", "p31", "p59"]
    everything = f.post(
        "/search",
        DocumentArray([Document(embedding=docs[0].embedding)]),
        parameters={"limit": 100},
    )
    assert sorted(m.id for m in everything[0].matches) == sorted(d.id for d in docs)
    assert acknowledged == len(everything[0].matches)


INDEXER_POLLING = {"/index": "ID", "/update": "ID", "/delete": "ID", "/search": "ALL", "*": "ALL"}


def found_ids(f: Flow, embeddings: list[np.ndarray]) -> list[str]:
    """The best match of each embedding, asked in large batches."""
    queries = DocumentArray(Document(embedding=e) for e in embeddings)
    answers = f.post("/search", queries, parameters={"limit": 1}, request_size=2_000)
    return [q.matches[0].id if len(q.matches) else "" for q in answers]


def summed(responses: list[Any], key: str) -> int:
    return int(sum(r.results["indexer"][key] for r in responses))


def test_twenty_thousand_documents_in_two_shards_of_two_replicas(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow().add(
            uses="services.vector_indexer:VectorIndexer",
            name="indexer",
            uses_with={"dim": DIM},
            shards=2,
            replicas=2,
            polling=INDEXER_POLLING,
        )
    )
    rng = np.random.default_rng(11)
    vectors = rng.standard_normal((20_000, DIM)).astype(np.float32)
    docs = DocumentArray(
        Document(id=f"d{i}", text=f"doc {i}", embedding=vectors[i]) for i in range(20_000)
    )
    indexed = f.post("/index", docs, request_size=500, return_responses=True)
    assert summed(indexed, "indexed") == 20_000
    [count] = f.post("/count", return_responses=True)
    assert count.results["indexer"]["count"] == 20_000  # both shards, added up
    # every document is found, whichever replica of its shard stored it or answers
    assert found_ids(f, list(vectors)) == docs.ids

    # updates reach their document: new text and a new vector for 2,000 of them
    moved = rng.standard_normal((2_000, DIM)).astype(np.float32)
    changes = DocumentArray(
        Document(id=f"d{i}", text=f"changed {i}", embedding=moved[i // 10])
        for i in range(0, 20_000, 10)
    )
    updated = f.post("/update", changes, request_size=500, return_responses=True)
    assert summed(updated, "updated") == 2_000  # no KeyError: each id went to its shard
    queries = DocumentArray(Document(embedding=v) for v in moved)
    answers = f.post("/search", queries, parameters={"limit": 1}, request_size=2_000)
    assert [q.matches[0].id for q in answers] == changes.ids
    assert [q.matches[0].text for q in answers] == [d.text for d in changes]

    # deletes reach their document
    gone = DocumentArray(Document(id=f"d{i}") for i in range(5, 20_000, 10))
    deleted = f.post("/delete", gone, request_size=500, return_responses=True)
    assert summed(deleted, "deleted") == 2_000
    [count] = f.post("/count", return_responses=True)
    assert count.results["indexer"]["count"] == 18_000
    left = found_ids(f, [vectors[i] for i in range(5, 20_000, 10)])
    assert not set(left) & set(gone.ids)
    kept = [i for i in range(20_000) if i % 10 not in (0, 5)]
    assert found_ids(f, [vectors[i] for i in kept]) == [f"d{i}" for i in kept]
