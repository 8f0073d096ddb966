"""VectorIndexer in a Flow: 2 shards searched together, and nothing acknowledged is lost when
a shard's process is killed with SIGKILL and restarted."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

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
            polling={"/search": "ALL", "/count": "ALL", "/index": "ANY", "*": "ALL"},
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
