"""Typed documents through the real gateway: named GraphQL types from executors' dataclasses,
typed query and mutation fields, inputs checked (with codes) before any executor runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import (
    build_client_schema,
    build_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    print_schema,
)

from meshflow import ConfigError, Flow
from meshflow.gateway.sdl import schema_sdl

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

StartFlow = Callable[[Flow], Flow]

SEARCH = """
query Search($docs: [ProductQueryInput!], $limit: Int) {
  search(docs: $docs, limit: $limit) {
    id text matches { id title category colour price stock score }
  }
}
"""
ADD = """
mutation Add($docs: [NewProductInput!]) {
  add(docs: $docs) { id title category price stock }
}
"""


def gql(flow: Flow, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        flow.graphql_url, json={"query": query, "variables": variables}, timeout=30
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def shop(start_flow: StartFlow) -> Flow:
    return start_flow(Flow().add(uses="typed_executors:Shop", name="shop"))


def test_typed_query_returns_named_types_with_typed_values(start_flow: StartFlow) -> None:
    f = shop(start_flow)
    body = gql(f, SEARCH, docs=[{"text": "red shoes"}], limit=2)
    assert "errors" not in body, body
    [look] = body["data"]["search"]
    assert look["text"] == "red shoes"
    assert look["matches"] == [
        {
            "id": "p3",
            "title": "Red shoes",
            "category": "shoes",
            "colour": "red",
            "price": 65.0,
            "stock": 0,  # not in the document: the dataclass's default
            "score": 2.0,
        },
        {
            "id": "p1",
            "title": "Red dress",
            "category": "dress",
            "colour": "red",
            "price": 49.5,
            "stock": 0,
            "score": 1.0,
        },
    ]
    # a field that travels as a tag filters like any tag: the input type carries it
    blue = gql(f, SEARCH, docs=[{"colour": "blue"}])["data"]["search"][0]["matches"]
    assert [m["id"] for m in blue] == ["p2"]
    names = gql(f, '{ __type(name: "Product") { name fields { name type { kind name } } } }')
    fields = {x["name"]: x["type"] for x in names["data"]["__type"]["fields"]}
    assert list(fields) == ["id", "title", "category", "colour", "price", "stock", "score"]
    assert fields["price"] == {"kind": "SCALAR", "name": "Float"}  # nullable: float | None
    assert fields["stock"] == {"kind": "NON_NULL", "name": None}


def test_typed_mutation_stores_and_answers_typed(start_flow: StartFlow) -> None:
    f = shop(start_flow)
    product = {"id": "p9", "title": "Green hat", "category": "hat", "price": 12, "stock": 3}
    body = gql(f, ADD, docs=[product])
    assert "errors" not in body, body
    assert body["data"]["add"] == [
        {"id": "p9", "title": "Green hat", "category": "hat", "price": 12.0, "stock": 3}
    ]
    found = gql(f, SEARCH, docs=[{"text": "hat"}])["data"]["search"][0]["matches"]
    assert [(m["id"], m["price"], m["stock"]) for m in found] == [("p9", 12.0, 3)]
    # a mutation is no query field, and the generic post still reaches the endpoint
    assert gql(f, "{ add { id } }")["errors"][0]["extensions"]["code"] == (
        "GRAPHQL_VALIDATION_FAILED"
    )
    generic = gql(
        f,
        'mutation { post(on: "/search", docs: [{text: "hat"}]) { docs { matches { id tags } } } }',
    )
    assert generic["data"]["post"]["docs"][0]["matches"][0]["tags"]["price"] == 12


@pytest.mark.mesh("direct")
def test_wrong_types_are_refused_with_codes_before_any_executor_runs(
    start_flow: StartFlow,
) -> None:
    f = shop(start_flow)
    cases = [
        # variables that do not fit the input type: BAD_USER_INPUT
        (ADD, {"docs": [{"id": "x1", "price": "cheap"}]}, "BAD_USER_INPUT"),
        (ADD, {"docs": [{"id": "x2", "stock": 2.5}]}, "BAD_USER_INPUT"),
        (ADD, {"docs": [{"title": "no id"}]}, "BAD_USER_INPUT"),  # id is required
        (ADD, {"docs": [{"id": "x3", "size": "L"}]}, "BAD_USER_INPUT"),  # no such field
        (SEARCH, {"docs": [{"text": 5}], "limit": 1}, "BAD_USER_INPUT"),
        (SEARCH, {"docs": [{"text": "hat"}], "limit": "one"}, "BAD_USER_INPUT"),
    ]
    for query, variables, code in cases:
        body = gql(f, query, **variables)
        assert body["data"] is None, (variables, body)
        assert [e["extensions"]["code"] for e in body["errors"]] == [code], (variables, body)
    literal = gql(f, 'mutation { add(docs: [{id: "x4", price: "cheap"}]) { id } }')
    assert literal["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Float cannot represent" in literal["errors"][0]["message"]
    # nothing reached the executor: none of the refused products was stored
    everything = gql(f, SEARCH, docs=[{}], limit=50)["data"]["search"][0]["matches"]
    assert sorted(m["id"] for m in everything) == ["p1", "p2", "p3"]


@pytest.mark.mesh("direct")
def test_an_answer_that_does_not_fit_its_type_is_an_executor_error(start_flow: StartFlow) -> None:
    f = shop(start_flow)
    body = gql(f, '{ broken(docs: [{id: "p1"}]) { id price } }')
    error = body["errors"][0]
    assert error["extensions"]["code"] == "EXECUTOR_ERROR"
    assert "tags.price is 'expensive', not a float" in error["message"]
    assert "Product.price" in error["message"]


def test_conflicting_type_names_refuse_the_flow_before_it_starts() -> None:
    f = Flow().add(uses="typed_executors:Shop", name="shop")
    f = f.add(uses="typed_executors:OtherShop", name="other")
    with pytest.raises(ConfigError) as refused:
        f.start()
    message = str(refused.value)
    assert "two typed documents are named 'Product'" in message
    assert "'shop'" in message and "'other'" in message
    assert f.pids == {}


@pytest.mark.mesh("direct")
def test_the_offline_sdl_is_the_typed_schema_the_gateway_serves(start_flow: StartFlow) -> None:
    f = shop(start_flow)
    assert "errors" not in gql(f, SEARCH, docs=[{"text": "red"}])  # every executor answered
    introspection = gql(f, get_introspection_query(descriptions=True, specified_by_url=True))
    served = lexicographic_sort_schema(build_client_schema(introspection["data"]))
    offline = lexicographic_sort_schema(build_schema(schema_sdl(f.spec)))
    assert print_schema(offline) == print_schema(served)


def test_the_schema_command_prints_the_typed_documents_and_refuses_conflicts(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)])}

    def schema(yaml: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "flow.yml").write_text(yaml)
        argv = [sys.executable, "-m", "meshflow", "graphql", "schema", "flow.yml"]
        return subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    done = schema("jtype: Flow\nexecutors:\n  - uses: typed_executors:Shop\n    name: shop\n")
    assert done.returncode == 0, done.stderr
    sdl = build_schema(done.stdout)
    look = sdl.get_type("Look")
    assert look is not None and str(look.fields["matches"].type) == "[Product!]!"  # type: ignore[attr-defined]
    assert {"ProductQueryInput", "NewProductInput", "Product"} <= set(sdl.type_map)
    both = schema(
        "jtype: Flow\nexecutors:\n  - uses: typed_executors:Shop\n    name: shop\n"
        "  - uses: typed_executors:OtherShop\n    name: other\n"
    )
    assert both.returncode == 2 and both.stdout == ""
    assert "two typed documents are named 'Product'" in both.stderr
    assert "Traceback" not in both.stderr


@pytest.mark.parametrize(
    ("entities", "message"),
    [
        ({"Nope": "/products"}, "names 'Nope', which no executor returns"),
        ({"Product": "/search"}, "the endpoint must be read-only and return Product"),
        ({"Product": "/add"}, "the endpoint must be read-only and return Product"),
    ],
)
def test_federation_entities_must_be_typed_documents_of_read_only_endpoints(
    entities: dict[str, str], message: str
) -> None:
    f = Flow(federation={"enabled": True, "entities": entities})
    f = f.add(uses="typed_executors:Shop", name="shop")
    with pytest.raises(ConfigError, match=message):
        f.check()
