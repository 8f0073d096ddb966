"""Dynamic batching through a real Flow: concurrent requests, over gRPC and GraphQL, served
by fewer calls of the method, each answered with exactly its own documents."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from meshflow import AsyncClient, Document, DocumentArray, Flow

StartFlow = Callable[[Flow], Flow]

POST = """
mutation($on: String!, $docs: [DocumentInput!], $parameters: JSON) {
  post(on: $on, docs: $docs, parameters: $parameters) { docs { id text tags } }
}
"""


def sizes(flow: Flow) -> list[int]:
    [results] = [r.results for r in flow.post("/sizes", return_responses=True)]
    [report] = results.values()  # the one deployment's
    return [int(n) for n in report["sizes"]]


def docs_of(rid: str, n: int) -> DocumentArray:
    return DocumentArray([Document(id=f"{rid}{i}", text=f"{rid}{i}") for i in range(n)])


def test_concurrent_requests_share_one_call_and_get_their_own_documents(
    start_flow: StartFlow,
) -> None:
    f = start_flow(Flow().add(uses="batching_executors:Batches", name="batches"))

    async def send() -> list[DocumentArray]:
        async with AsyncClient(port=f.port, timeout=60) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post("/encode", docs_of(rid, n), parameters={"tag": "t"})
                        for rid, n in (("a", 1), ("b", 2), ("c", 3))
                    )
                )
            )

    answers = asyncio.run(asyncio.wait_for(send(), 60))
    assert sizes(f) == [6]  # three requests, one call
    for answer, (rid, n) in zip(answers, (("a", 1), ("b", 2), ("c", 3)), strict=True):
        assert answer.ids == [f"{rid}{i}" for i in range(n)]
        assert answer.texts == [f"{rid}{i}|t" for i in range(n)]
        assert {d.tags["call"] for d in answer} == {1}


@pytest.mark.mesh("direct")
def test_requests_with_different_parameters_go_in_separate_calls(start_flow: StartFlow) -> None:
    batching = {"/encode": {"preferred_batch_size": 6, "timeout": 300}}
    flow = Flow().add(uses="batching_executors:Batches", name="b", uses_dynamic_batching=batching)
    f = start_flow(flow)

    async def send() -> list[DocumentArray]:
        async with AsyncClient(port=f.port, timeout=60) as client:
            return list(
                await asyncio.gather(
                    client.post("/encode", docs_of("a", 3), parameters={"tag": "x"}),
                    client.post("/encode", docs_of("b", 3), parameters={"tag": "y"}),
                )
            )

    a, b = asyncio.run(asyncio.wait_for(send(), 60))
    assert sorted(sizes(f)) == [3, 3]  # 6 documents, but never merged
    assert a.texts == ["a0|x", "a1|x", "a2|x"]
    assert b.texts == ["b0|y", "b1|y", "b2|y"]


def test_graphql_posts_share_one_call(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="batching_executors:Batches", name="batches"))

    def post(rid: str) -> dict[str, Any]:
        docs = [{"id": f"{rid}{i}", "text": f"{rid}{i}"} for i in range(2)]
        variables = {"on": "/encode", "docs": docs, "parameters": {"tag": "g"}}
        response = httpx.post(
            f.graphql_url, json={"query": POST, "variables": variables}, timeout=60
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return body

    with ThreadPoolExecutor(3) as pool:
        bodies = list(pool.map(post, "xyz"))
    assert sizes(f) == [6]
    for body, rid in zip(bodies, "xyz", strict=True):
        got = body["data"]["post"]["docs"]
        assert [d["id"] for d in got] == [f"{rid}0", f"{rid}1"]
        assert [d["text"] for d in got] == [f"{rid}0|g", f"{rid}1|g"]
