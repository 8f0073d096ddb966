"""Fast answers through the real gateway: the HTTP door of a running Flow (Documents completed
by projection, written with orjson) answers the same bytes as graphql-core's generic
completion over the same Flow's answer.

The generic answer comes from the gateway's own ASGI app run in the test, with the
projection switched off, over a gateway whose requests go to the running Flow's gRPC door
(so both answers come from the same executors, through the same traversal).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from meshflow import Document, DocumentArray, Executor, Flow, requests
from meshflow.gateway.answers import AnswerExecutionContext
from meshflow.gateway.http import make_app
from meshflow.gateway.server import Gateway
from meshflow.gateway.testing import ScriptedTransport
from meshflow.gateway.topology import Node, Topology
from meshflow.gateway.traversal import Traversal
from meshflow.identity import Identity
from meshflow.spec.limits import GraphQLLimits


class Answers(Executor):
    """On '/search', gives each query tags, an embedding, matches (with their own chunks and
    embeddings) and chunks; the last query gets no match."""

    @requests(on="/search")
    def search(self, docs: DocumentArray, **kwargs: Any) -> None:
        values = np.array([1e-7, 0.1, 3.0e38, -0.0, 1 / 3], dtype=np.float32)
        for i, q in enumerate(docs):
            q.tags = {"i": i, "nested": {"list": [1, "two", None]}}
            q.embedding = values * (i + 1)
            if i == len(docs) - 1:
                continue
            q.matches = DocumentArray(
                Document(
                    id=f"{q.id}-m{j}",
                    text=f"match é {j}",
                    uri=f"file:///{j}.png",
                    mime_type="image/png",
                    blob=bytes([j, 0, 255]),
                    tensor=np.arange(6, dtype=np.int32).reshape(2, 3) + j,
                    embedding=values + j,
                    scores={"cosine": 1.0 - j / 4, "bm25": 1.5e-05 * j},
                    tags={"rank": j},
                    chunks=[Document(id=f"{q.id}-m{j}-c0", text="chunk")],
                )
                for j in range(4)
            )
            q.chunks = DocumentArray(
                Document(id=f"{q.id}-c{k}", parent_id=q.id, text=f"part {k}") for k in range(2)
            )


SEARCH = 'mutation($docs: [DocumentInput!]) { post(on: "/search", docs: $docs) { %s } }'
QUERIES = [
    SEARCH % "docs { id matches { id scores } }",
    SEARCH % "docs { id matches { id scores embedding { data } } }",
    SEARCH
    % "docs { id parentId text blob uri mimeType tags scores embedding { shape dtype data } }",
    SEARCH % "docs { __typename a: id matches { k: id __typename tensor { shape dtype data } } }",
    SEARCH % "docs { ... on Document { id } matches { ...M } chunks { id parentId text } }"
    + " fragment M on Document { id text chunks { id text } scores }",
    SEARCH % "docs { id matches { id @skip(if: true) text @include(if: true) "
    "tensor @include(if: false) { data } } } results",
]


class _ThroughGrpc(Gateway):
    """A gateway whose requests run through a running Flow's gRPC door."""

    def __init__(self, port: int) -> None:
        topology = Topology((Node(name="unused", needs=("gateway",), shards=(("x",),)),))
        super().__init__(Traversal(topology, ScriptedTransport()))
        self.target = f"127.0.0.1:{port}"

    async def _run(
        self, data: bytes, deadline: float | None, identity: Identity | None, door: str
    ) -> bytes:
        async with grpc.aio.insecure_channel(self.target) as channel:
            post = channel.unary_unary("/meshflow.v1.GatewayService/Post")
            answer: bytes = await post(data, timeout=30)
            return answer


async def _generic(port: int, body: dict[str, Any]) -> bytes:
    app = make_app(_ThroughGrpc(port), GraphQLLimits())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        response = await http.post("/graphql", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def _keys(value: Any) -> Any:
    """The keys of every object in ``value``, in order (not inside maps: scores, tags)."""
    if isinstance(value, dict):
        return [(k, None if k in ("scores", "tags") else _keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_keys(v) for v in value]
    return None


@pytest.mark.mesh("direct")  # the answer path is the gateway's own, whatever the mesh
def test_the_gateway_answers_what_the_generic_completion_answers(
    start_flow: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = start_flow(Flow().add(uses=Answers, name="answers"))
    docs = [{"id": f"q{i}", "text": f"query {i}"} for i in range(3)]
    assert f.port is not None
    monkeypatch.setattr(
        AnswerExecutionContext,
        "complete_object_value",
        StrawberryGraphQLCoreExecutionContext.complete_object_value,
    )
    for query in QUERIES:
        body = {"query": query, "variables": {"docs": docs}}
        fast = httpx.post(f.graphql_url, json=body, timeout=30)
        assert fast.status_code == 200, fast.text
        answer = json.loads(fast.content)
        assert "errors" not in answer, (query, answer)
        assert len(answer["data"]["post"]["docs"]) == 3
        generic = asyncio.run(asyncio.wait_for(_generic(f.port, body), 60))
        # Equal values, and the keys of every object in the same order; a protobuf map's
        # order (scores) may differ between two answers of an executor, so maps are compared
        # as dicts only.
        assert answer == json.loads(generic), query
        assert _keys(answer) == _keys(json.loads(generic)), query
    embedding = json.loads(
        httpx.post(
            f.graphql_url,
            json={"query": QUERIES[1], "variables": {"docs": docs}},
            timeout=30,
        ).content
    )["data"]["post"]["docs"][0]["matches"][1]["embedding"]["data"]
    expected = np.array([1e-7, 0.1, 3.0e38, -0.0, 1 / 3], dtype=np.float32) + 1
    assert embedding == expected.astype(np.float64).tolist()
