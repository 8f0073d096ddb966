"""The GraphQL door answers in the media type the client's Accept prefers: request errors are
4xx without ``data`` in ``application/graphql-response+json``, 200 with ``"data": null`` in
``application/json`` (as before the specification), and field errors are 200 in both."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from meshflow.errors import ExecutorError
from meshflow.gateway.http import make_app
from meshflow.gateway.negotiation import GRAPHQL_RESPONSE, JSON, negotiate
from meshflow.gateway.server import Gateway
from meshflow.gateway.testing import Call, ScriptedTransport
from meshflow.gateway.topology import Node, Topology
from meshflow.gateway.traversal import Traversal
from meshflow.spec.limits import GraphQLLimits

NEW = "application/graphql-response+json"


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, JSON),
        ("", JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        ("application/json", JSON),
        ("text/html", JSON),  # nothing the door serves: answered anyway, as before
        (NEW, GRAPHQL_RESPONSE),
        (f"{NEW}; charset=utf-8", GRAPHQL_RESPONSE),
        (f"{NEW}, application/json", GRAPHQL_RESPONSE),  # the client the spec recommends
        (f"application/json, {NEW}", GRAPHQL_RESPONSE),  # same q: the spec's own type
        (f"{NEW};q=0.9, application/json", JSON),
        (f"application/json;q=0.5, {NEW}", GRAPHQL_RESPONSE),
        (f"{NEW};q=0", JSON),
        (f"{NEW};q=0.5, */*", JSON),  # */* gives application/json q=1
        (f"{NEW};q=oops", JSON),
        ("APPLICATION/GRAPHQL-RESPONSE+JSON", GRAPHQL_RESPONSE),
    ],
)
def test_accept_picks_the_media_type(accept: str | None, media: str) -> None:
    assert negotiate(accept) == media


def _gateway() -> Gateway:
    def fail(call: Call) -> bytes:
        raise ExecutorError("refused in a test", executor="enc", endpoint="/x")

    topology = Topology((Node(name="exec0", needs=("gateway",), shards=(("x",),)),))
    return Gateway(Traversal(topology, ScriptedTransport(fail)))


def _ask(accept: str | None, **body: Any) -> httpx.Response:
    async def main() -> httpx.Response:
        app = make_app(_gateway(), GraphQLLimits(max_docs=2))
        headers = {"accept": accept} if accept is not None else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            if "raw" in body:
                headers["content-type"] = "application/json"
                return await http.post("/graphql", content=body["raw"], headers=headers)
            return await http.post("/graphql", json=body, headers=headers, timeout=10)

    return asyncio.run(asyncio.wait_for(main(), 30))


COERCION = {"query": "query Q($n: String!) { __type(name: $n) { name } }", "variables": {"n": None}}
TOO_MANY = 'mutation { post(on: "/x", docs: [{id: "a"}, {id: "b"}, {id: "c"}]) { requestId } }'
TWO = "query A { __typename } query B { __schema { queryType { name } } }"
REQUEST_ERRORS = [
    pytest.param({"query": "{"}, 400, "GRAPHQL_PARSE_FAILED", id="parse"),
    pytest.param({"query": "{ nope }"}, 400, "GRAPHQL_VALIDATION_FAILED", id="validation"),
    pytest.param(COERCION, 400, "BAD_USER_INPUT", id="variable-coercion"),
    pytest.param({"query": TOO_MANY}, 413, "TOO_MANY_DOCUMENTS", id="guard"),
    pytest.param({"query": TWO}, 400, "BAD_REQUEST", id="two-operations-unnamed"),
]


@pytest.mark.parametrize(("body", "status", "code"), REQUEST_ERRORS)
def test_a_request_error_is_4xx_without_data_in_graphql_response_json(
    body: dict[str, Any], status: int, code: str
) -> None:
    response = _ask(f"{NEW}, application/json;q=0.9", **body)
    assert response.status_code == status
    assert response.headers["content-type"] == f"{NEW}; charset=utf-8"
    assert "accept" in response.headers["vary"].lower()
    answer = response.json()
    assert "data" not in answer
    assert [e["extensions"]["code"] for e in answer["errors"]] == [code]


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
@pytest.mark.parametrize(("body", "status", "code"), REQUEST_ERRORS)
def test_a_request_error_is_200_with_null_data_in_application_json(
    accept: str | None, body: dict[str, Any], status: int, code: str
) -> None:
    response = _ask(accept, **body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    assert answer["data"] is None
    assert [e["extensions"]["code"] for e in answer["errors"]] == [code]


@pytest.mark.parametrize("accept", [NEW, "application/json"])
def test_a_field_error_keeps_data_and_200_in_both_media_types(accept: str) -> None:
    response = _ask(accept, query='mutation { post(on: "/x") { requestId } }')
    assert response.status_code == 200
    answer = response.json()
    assert answer["data"] is None  # post is non-null: its error nulls the whole data
    [error] = answer["errors"]
    assert error["path"] == ["post"]
    assert error["extensions"]["code"] == "EXECUTOR_ERROR"


@pytest.mark.parametrize("accept", [NEW, "application/json"])
def test_a_success_is_200_in_the_negotiated_media_type(accept: str) -> None:
    response = _ask(accept, query="{ __typename }")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == accept
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("accept", [NEW, "application/json"])
@pytest.mark.parametrize(
    "body",
    [{"raw": b"{"}, {"raw": b"[1]"}, {"variables": {}}, {"query": 7}],
    ids=["bad-json", "not-an-object", "no-query", "query-not-a-string"],
)
def test_a_malformed_request_is_400_in_both_media_types(accept: str, body: dict[str, Any]) -> None:
    response = _ask(accept, **body)
    assert response.status_code == 400
    assert response.headers["content-type"].split(";")[0] == accept
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST"


def test_a_named_operation_of_several_runs_alone() -> None:
    answer = _ask(NEW, query=TWO, operationName="B")
    assert answer.status_code == 200
    assert answer.json() == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
