"""The GraphQL door over real HTTP: same answers as gRPC, pushdown, guards, errors."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from meshflow import Document, DocumentArray, Flow, GraphQLLimits

StartFlow = Callable[[Flow], Flow]

POST = """
mutation($on: String!, $docs: [DocumentInput!], $parameters: JSON) {
  post(on: $on, docs: $docs, parameters: $parameters) {
    requestId
    docs { id text tags embedding { data shape dtype } matches { id scores tags } }
    results
  }
}
"""


def gql(flow: Flow, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        flow.graphql_url, json={"query": query, "variables": variables}, timeout=30
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def post(flow: Flow, on: str, docs: list[dict[str, Any]], **parameters: Any) -> dict[str, Any]:
    body = gql(flow, POST, on=on, docs=docs, parameters=parameters or None)
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["post"]
    return result


def test_seed_flow_answers_the_same_over_graphql_and_grpc(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append", uses_with={"suffix": "hello, world!"}))
    f = f  # the seed program's executor, twice
    grpc_docs = f.post("/", DocumentArray([Document(id="a"), Document(id="b")]))
    graphql_docs = post(f, "/", [{"id": "a"}, {"id": "b"}])["docs"]
    assert [d["text"] for d in graphql_docs] == grpc_docs.texts == ["hello, world!"] * 2
    assert [d["id"] for d in graphql_docs] == grpc_docs.ids


def test_branches_shards_and_replicas_answer_the_same(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Tag", name="left", needs="gateway", replicas=2)
        .add(uses="executors:Tag", name="right", needs="gateway")
        .add(
            uses="executors:MemoryIndex",
            name="index",
            needs=["left", "right"],
            shards=2,
            polling={"/index": "ANY", "*": "ALL"},
        )
    )
    for i in range(8):  # one request each: polling ANY spreads them over both shards
        post(f, "/index", [{"id": f"d{i}", "embedding": {"data": [i, 0]}}])
    query = [{"id": "q", "embedding": {"data": [3.4, 0]}}]
    over_graphql = post(f, "/search", query, k=3)["docs"]
    [over_grpc] = f.post(
        "/search", Document(id="q", embedding=np.array([3.4, 0], dtype=np.float32)), {"k": 3}
    )
    [doc] = over_graphql
    assert doc["tags"] == over_grpc.tags == {"left": True, "right": True}
    assert (
        [m["id"] for m in doc["matches"]] == [m.id for m in over_grpc.matches] == ["d3", "d4", "d2"]
    )
    assert [m["scores"] for m in doc["matches"]] == [m.scores for m in over_grpc.matches]
    assert {m["tags"]["shard"] for m in doc["matches"]} == {0.0, 1.0}


def test_documents_expose_every_field(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append"))
    query = """
    mutation($docs: [DocumentInput!]) {
      post(on: "/", docs: $docs) {
        docs { id parentId text blob uri mimeType tags scores matches { id } chunks { id }
               tensor { data shape dtype } embedding { data shape dtype } }
      }
    }"""
    docs = [
        {
            "id": "x",
            "parentId": "p",
            "text": "t",
            "blob": "aGk=",
            "uri": "file:///a.png",
            "mimeType": "image/png",
            "tags": {"k": [1, "v"]},
            "tensor": {"data": [1, 2, 3, 4], "shape": [2, 2], "dtype": "uint8"},
            "embedding": {"data": [0.5, 1.5]},
        }
    ]
    [doc] = gql(f, query, docs=docs)["data"]["post"]["docs"]
    assert doc == {
        "id": "x",
        "parentId": "p",
        "text": "tx",
        "blob": "aGk=",
        "uri": "file:///a.png",
        "mimeType": "image/png",
        "tags": {"k": [1.0, "v"]},
        "scores": {},
        "tensor": {"data": [1.0, 2.0, 3.0, 4.0], "shape": [2, 2], "dtype": "|u1"},
        "embedding": {"data": [0.5, 1.5], "shape": [2], "dtype": "<f4"},
        "matches": [],
        "chunks": [],
    }


@pytest.mark.mesh("envoy")
def test_embeddings_not_selected_never_leave_the_mesh(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:MemoryIndex", name="index"))
    corpus = [{"id": f"d{i}", "embedding": {"data": list(np.arange(512.0) + i)}} for i in range(60)]
    post(f, "/index", corpus)
    queries = [{"id": f"q{i}", "embedding": {"data": list(np.arange(512.0))}} for i in range(10)]
    admin = f.describe()["gateway"]["sidecar"]["admin"]

    def received(select: str) -> int:
        before = _stat(admin, "cluster.index_shard0.upstream_cx_rx_bytes_total")
        body = gql(
            f,
            'mutation($docs: [DocumentInput!]) { post(on: "/search", docs: $docs, '
            "parameters: {k: 50}) { " + select + " } }",
            docs=queries,
        )
        assert "errors" not in body
        if "matches" in select:
            assert all(len(d["matches"]) == 50 for d in body["data"]["post"]["docs"])
        return _stat(admin, "cluster.index_shard0.upstream_cx_rx_bytes_total") - before

    lean = received("docs { id matches { id scores } }")
    full = received("docs { id matches { id scores embedding { shape } } }")
    # 10 docs x 50 matches x 512 float32 = ~1 MB of embeddings, only when selected.
    assert full - lean > 900_000
    assert lean < 100_000
    # No document field selected: only the ids travel back.
    assert received("requestId") < 10_000


def _stat(admin: str, name: str) -> int:
    from meshflow.mesh.sidecar import admin_get

    _, body = admin_get(admin, f"/stats?filter=^{name}$")
    return int(body.split(":")[1])


def test_executor_failure_is_a_graphql_error_naming_it(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Failing", name="checker"))
    body = gql(f, 'mutation { post(on: "/fail") { requestId } }')
    [error] = body["errors"]
    assert error["extensions"]["code"] == "EXECUTOR_ERROR"
    assert error["extensions"]["executor"] == "checker"
    assert error["extensions"]["exceptionType"] == "ValueError"
    assert "bad input for failing" in error["message"]


def test_flow_query_shows_topology_endpoints_and_health(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Append", name="a", replicas=2)
        .add(uses="executors:MemoryIndex", name="b", shards=2, polling="ALL")
    )
    body = gql(
        f,
        "{ flow { healthy deployments { name replicas shards endpoints healthy needs } "
        "edges { source target } } }",
    )
    flow = body["data"]["flow"]
    assert flow["healthy"]
    assert flow["deployments"] == [
        {
            "name": "a",
            "replicas": 2,
            "shards": 1,
            "endpoints": ["/default"],
            "healthy": True,
            "needs": ["gateway"],
        },
        {
            "name": "b",
            "replicas": 1,
            "shards": 2,
            "endpoints": ["/count", "/index", "/search"],
            "healthy": True,
            "needs": ["a"],
        },
    ]
    assert flow["edges"] == [
        {"source": "gateway", "target": "a"},
        {"source": "a", "target": "b"},
        {"source": "b", "target": "gateway"},
    ]


# -- guards --------------------------------------------------------------------------------


@pytest.fixture
def guarded(start_flow: StartFlow) -> Flow:
    limits = GraphQLLimits(
        max_depth=4, max_aliases=3, max_tokens=200, max_body_bytes=20_000, max_docs=5
    )
    return start_flow(Flow(graphql_limits=limits).add(uses="executors:Append"))


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ flow { deployments { name } edges { source } } }", None),
        (
            'mutation { post(on: "/") { docs { matches { matches { matches { id } } } } } }',
            "DEPTH_LIMIT_EXCEEDED",
        ),
        (
            "{ a: flow { healthy } b: flow { healthy } c: flow { healthy } d: flow { healthy } }",
            "ALIAS_LIMIT_EXCEEDED",
        ),
        ("{ flow { " + "healthy " * 250 + "} }", "TOKEN_LIMIT_EXCEEDED"),
        ("{ flow { nope } }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ flow { ", "GRAPHQL_PARSE_FAILED"),
        (
            'mutation { post(on: "/", docs: [{}, {}, {}, {}, {}, {}]) { requestId } }',
            "TOO_MANY_DOCUMENTS",
        ),
        ('mutation { post(on: "/", docs: [{blob: "%%%"}]) { requestId } }', "BAD_USER_INPUT"),
    ],
)
def test_every_guard_answers_with_its_code(guarded: Flow, query: str, code: str | None) -> None:
    body = httpx.post(guarded.graphql_url, json={"query": query}, timeout=30).json()
    if code is None:
        assert "errors" not in body
    else:
        assert [e["extensions"]["code"] for e in body["errors"]] == [code]
    assert post(guarded, "/", [{"text": "still"}])["docs"][0]["text"] == "stillx"


def test_oversized_body_is_413_with_a_code(guarded: Flow) -> None:
    response = httpx.post(
        guarded.graphql_url, json={"query": "{ flow { healthy } }", "pad": "x" * 30_000}
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "REQUEST_TOO_LARGE"
    assert post(guarded, "/", [{"text": "ok"}])["docs"][0]["text"] == "okx"


def test_malformed_json_is_400(guarded: Flow) -> None:
    response = httpx.post(
        guarded.graphql_url, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON" in response.text


# -- POST /post and the page -----------------------------------------------------------------


def test_plain_http_post_for_curl_users(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append"))
    url = f.graphql_url.replace("/graphql", "/post")
    answer = httpx.post(url, json={"on": "/", "docs": [{"text": "a", "embedding": [1, 2]}]}).json()
    [doc] = answer["docs"]
    assert doc["text"] == "ax" and doc["embedding"] == {
        "data": [1.0, 2.0],
        "shape": [2],
        "dtype": "<f4",
    }
    lean = httpx.post(
        url, json={"on": "/", "docs": [{"text": "a", "embedding": [1, 2]}], "fields": ["text"]}
    ).json()
    assert set(lean["docs"][0]) == {"id", "text"}
    for bad, code in (
        (b"{nope", "BAD_REQUEST"),  # not JSON: the HTTP request itself is malformed
        (b"[]", "BAD_REQUEST"),
        (b'{"docs": []}', "BAD_USER_INPUT"),  # the input is wrong, as in the mutation
        (b'{"on": "/", "docs": [{"colour": 1}]}', "BAD_USER_INPUT"),
        (b'{"on": "/", "docs": [{"blob": "%%%"}]}', "BAD_USER_INPUT"),
        (b'{"on": "/", "parameter": {"limit": 3}}', "BAD_USER_INPUT"),  # a typo of a key
    ):
        response = httpx.post(url, content=bad, headers={"content-type": "application/json"})
        assert response.status_code == 400, bad
        assert response.json()["errors"][0]["extensions"]["code"] == code, bad
    typo = httpx.post(url, json={"on": "/", "parameter": {}}).json()["errors"][0]["message"]
    assert "'parameter'" in typo and '"parameters"' in typo


def test_graphiql_page_works_offline(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append"))
    page = httpx.get(f.graphql_url.replace("/graphql", "/")).text
    assert "<textarea" in page and "fetch('graphql'" in page
    assert "http://" not in page and "https://" not in page


# -- subscriptions and the GraphQL client ----------------------------------------------------


def test_stream_subscription_pushes_every_answer(start_flow: StartFlow) -> None:
    from websockets.sync.client import connect
    from websockets.typing import Subprotocol

    f = start_flow(Flow().add(uses="executors:Append"))
    ws_url = f.graphql_url.replace("http://", "ws://")
    query = (
        'subscription { stream(on: "/", batches: [[{text: "a"}], [{text: "b"}], '
        '[{text: "c"}]], maxInFlight: 2) { batch docs { text } } }'
    )
    with connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        answers = {}
        while True:
            message = json.loads(ws.recv(timeout=10))
            if message["type"] == "complete":
                break
            assert message["type"] == "next", message
            item = message["payload"]["data"]["stream"]
            answers[item["batch"]] = item["docs"][0]["text"]
    assert answers == {0: "ax", 1: "bx", 2: "cx"}


def test_graphql_client_gives_the_same_documents_as_grpc(start_flow: StartFlow) -> None:
    from meshflow import Client

    f = start_flow(Flow().add(uses="executors:MemoryIndex", name="index"))
    corpus = DocumentArray(
        Document(id=f"d{i}", embedding=np.array([i, 0], dtype=np.float32), tags={"n": i})
        for i in range(6)
    )
    assert f.graphql_port is not None
    with Client(port=f.graphql_port, protocol="graphql") as web:
        indexed = web.post("/index", corpus, request_size=2)  # three requests: a subscription
        assert indexed.ids == corpus.ids
        query = Document(id="q", embedding=np.array([2.2, 0], dtype=np.float32), blob=b"\x00\x01")
        [over_graphql] = web.post("/search", query, parameters={"k": 2})
    [over_grpc] = f.post("/search", query, parameters={"k": 2})
    assert over_graphql.blob == b"\x00\x01"
    assert over_graphql.matches.ids == over_grpc.matches.ids == ["d2", "d3"]
    assert [m.scores for m in over_graphql.matches] == [m.scores for m in over_grpc.matches]
    assert over_graphql.matches[0].embedding.dtype == np.float32
    assert over_graphql.matches[0].tags == {"n": 2.0, "shard": 0.0}


@pytest.mark.mesh("direct")
def test_graphql_client_streams_more_documents_than_one_operation_takes(
    start_flow: StartFlow,
) -> None:
    from meshflow import Client

    f = start_flow(Flow().add(uses="executors:Append"))
    assert f.graphql_port is not None
    docs = DocumentArray(Document(text=str(i)) for i in range(2500))
    with Client(port=f.graphql_port, protocol="graphql") as web:
        answered = web.post("/", docs, request_size=100)  # 25 batches, 3 subscriptions
    assert answered.texts == [f"{i}x" for i in range(2500)]


def test_graphql_client_raises_executor_errors(start_flow: StartFlow) -> None:
    from meshflow import Client, ExecutorError

    f = start_flow(Flow().add(uses="executors:Failing", name="checker"))
    assert f.graphql_port is not None
    with (
        Client(port=f.graphql_port, protocol="graphql") as web,
        pytest.raises(ExecutorError) as info,
    ):
        web.post("/fail", DocumentArray.empty(1))
    assert info.value.executor == "checker" and info.value.exception_type == "ValueError"


# -- read-only endpoints as query fields -------------------------------------------------------


def test_read_only_endpoint_is_a_query_field_with_typed_arguments(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Catalog", name="catalog"))
    body = gql(
        f,
        '{ search(docs: [{id: "q"}], category: "coats", limit: 1) '
        "{ docs { id matches { id scores } } } }",
    )
    assert body["data"]["search"]["docs"] == [
        {"id": "q", "matches": [{"id": "coat-1", "scores": {"rank": 0.3333333333333333}}]}
    ]
    schema = gql(
        f,
        '{ __type(name: "Query") { fields { name args { name type { name ofType { name } } } } } }',
    )
    fields = {field["name"]: field for field in schema["data"]["__type"]["fields"]}
    assert set(fields) == {"flow", "search"}  # /index is not read-only: mutation only
    args = {
        a["name"]: a["type"]["name"] or a["type"]["ofType"]["name"]
        for a in fields["search"]["args"]
    }
    assert args == {
        "docs": None,
        "targetExecutor": "String",
        "limit": "Int",
        "category": "String",
        "minScore": "Float",
    }
    wrong = gql(f, '{ search(docs: [{id: "q"}], limit: "two") { requestId } }')
    assert wrong["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_typed_parameters_reach_the_executor_over_grpc_too(start_flow: StartFlow) -> None:
    from meshflow import BadRequestError

    f = start_flow(Flow().add(uses="executors:Catalog", name="catalog"))
    [doc] = f.post("/search", Document(), parameters={"limit": 2, "category": "shoes"})
    assert doc.matches.ids == ["shoe-1", "shoe-2"]
    # other executors' keys are left alone; a key named after the executor is its own
    [doc] = f.post("/search", Document(), parameters={"limit": 1, "colour": "red"})
    assert doc.matches.ids == ["shoe-1"]
    [doc] = f.post("/search", Document(), parameters={"limit": 1, "catalog": {"limit": 3}})
    assert len(doc.matches) == 3
    with pytest.raises(BadRequestError) as info:  # INVALID_ARGUMENT, naming the executor
        f.post("/search", Document(), parameters={"limit": "two"})
    assert "'catalog'" in str(info.value) and "whole number" in str(info.value)
    with pytest.raises(BadRequestError, match="whole number"):  # on a stream too
        f.post("/search", [Document(), Document()], parameters={"limit": "two"}, request_size=1)
    wrong = gql(f, 'mutation { post(on: "/search", parameters: {limit: "two"}) { requestId } }')
    assert wrong["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "whole number" in wrong["errors"][0]["message"]


@pytest.mark.mesh("direct")
def test_graphql_requests_never_wait_on_a_silent_deployment(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Catalog", name="catalog")
        .add(uses="executors:Append", name="sleepy", needs="gateway")
    )
    pid = f.pids["executor 'sleepy' (shard 0, replica 0)"]
    os.kill(pid, signal.SIGSTOP)  # it accepts connections and answers nothing
    try:
        fields: set[str] = set()
        for _ in range(50):
            # A probe of the silent deployment would take its 2 s timeout: the bound of
            # 1.5 s shows that no request waits on it.
            typename = httpx.post(f.graphql_url, json={"query": "{ __typename }"}, timeout=1.5)
            assert typename.json() == {"data": {"__typename": "Query"}}
            answer = httpx.post(
                f.graphql_url,
                json={"query": '{ __type(name: "Query") { fields { name } } }'},
                timeout=1.5,
            ).json()
            fields = {field["name"] for field in answer["data"]["__type"]["fields"]}
            if "search" in fields:
                break  # the catalog's fields came, whatever the silent deployment does
            time.sleep(0.1)
        assert {"flow", "search"} <= fields
    finally:
        os.kill(pid, signal.SIGCONT)
