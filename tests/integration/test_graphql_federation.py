"""The typed schema with real JavaScript tools: the gateway as an Apollo Federation 2 subgraph
composed by a real ``@apollo/gateway`` with a second (Node ``@apollo/subgraph``) subgraph,
and GraphQL Code Generator accepting the offline SDL.

The npm packages, pinned in ``tests/integration/node_federation/package.json``, are installed
with npm into a temporary folder once per session; without Node or npm the tests are skipped
(they fail where MESHFLOW_REQUIRE_SYSTEM_TOOLS is set, as in CI, and so does a failed npm
install). Each Node script starts its servers on loopback ports the OS picks and stops them
before it ends; the test bounds it with a timeout."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import build_schema
from systemtools import NodeProject, node_project

from meshflow import Flow
from meshflow.gateway.sdl import schema_sdl

pytestmark = pytest.mark.timeout(420)  # the first test also waits for npm install

StartFlow = Callable[[Flow], Flow]
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node_federation")
FEDERATION = {"enabled": True, "entities": {"Product": "/products"}}


@pytest.fixture(scope="session")
def node() -> Iterator[NodeProject]:
    with node_project(SCRIPTS, "@apollo/gateway and @graphql-codegen", 300) as project:
        yield project


def federate(node: NodeProject, flow: Flow, query: str, **variables: Any) -> dict[str, Any]:
    """``query`` through an Apollo Gateway composing ``flow`` with the reviews subgraph."""
    answer: dict[str, Any] = json.loads(
        node.run("federate.mjs", flow.graphql_url, query, json.dumps(variables))
    )
    return answer


@pytest.mark.mesh("direct")
def test_apollo_gateway_composes_meshflow_with_another_subgraph(
    node: NodeProject, start_flow: StartFlow
) -> None:
    f = start_flow(
        Flow(federation=FEDERATION).add(uses="typed_executors:Shop", name="shop", replicas=2)
    )
    # Reviews (other subgraph) -> their Product's typed fields (meshflow's _entities, through
    # /products), and meshflow's typed search -> each match's reviews (the other subgraph).
    query = """
    query Spanning($docs: [ProductQueryInput!]) {
      reviews { body product { id title price category } }
      search(docs: $docs, limit: 2) { matches { id title reviews { stars } } }
    }
    """
    body = federate(node, f, query, docs=[{"text": "red dress"}])
    assert "errors" not in body, body
    assert body["data"]["reviews"] == [
        {
            "body": "Fits well",
            "product": {"id": "p1", "title": "Red dress", "price": 49.5, "category": "dress"},
        },
        {
            "body": "Too tight",
            "product": {"id": "p1", "title": "Red dress", "price": 49.5, "category": "dress"},
        },
        {
            "body": "Comfortable",
            "product": {"id": "p2", "title": "Blue shoes", "price": 80, "category": "shoes"},
        },
    ]
    assert body["data"]["search"] == [
        {
            "matches": [
                {"id": "p1", "title": "Red dress", "reviews": [{"stars": 5}, {"stars": 2}]},
                {"id": "p3", "title": "Red shoes", "reviews": []},
            ]
        }
    ]


@pytest.mark.mesh("direct")
def test_entities_unknown_to_the_endpoint_are_null_and_federation_off_has_no_service(
    node: NodeProject, start_flow: StartFlow
) -> None:
    f = start_flow(Flow(federation=FEDERATION).add(uses="typed_executors:Shop", name="shop"))
    entities = """query($r: [_Any!]!) { _entities(representations: $r) {
      ... on Product { id title stock } } }"""
    refs = [{"__typename": "Product", "id": "p2"}, {"__typename": "Product", "id": "nope"}]
    body = httpx.post(
        f.graphql_url, json={"query": entities, "variables": {"r": refs}}, timeout=30
    ).json()
    assert body["data"]["_entities"] == [{"id": "p2", "title": "Blue shoes", "stock": 0}, None]
    sdl = httpx.post(f.graphql_url, json={"query": "{ _service { sdl } }"}, timeout=30).json()
    assert 'type Product @key(fields: "id")' in sdl["data"]["_service"]["sdl"]
    plain = start_flow(Flow().add(uses="typed_executors:Shop", name="shop"))
    off = httpx.post(plain.graphql_url, json={"query": "{ _service { sdl } }"}, timeout=30)
    assert off.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_the_offline_sdl_has_the_typed_documents_and_codegen_accepts_it(
    node: NodeProject, tmp_path: Path
) -> None:
    flow = Flow().add(uses="typed_executors:Shop", name="shop")
    sdl = schema_sdl(flow.spec)
    schema = build_schema(sdl)
    product = schema.get_type("Product")
    assert product is not None
    assert set(product.fields) == {  # type: ignore[attr-defined]
        "id",
        "title",
        "category",
        "colour",
        "price",
        "stock",
        "score",
    }
    query = schema.query_type
    assert query is not None and str(query.fields["search"].type) == "[Look!]!"
    assert str(query.fields["search"].args["docs"].type) == "[ProductQueryInput!]"
    assert schema.mutation_type is not None
    assert str(schema.mutation_type.fields["add"].type) == "[Product!]!"
    path = tmp_path / "schema.graphql"
    path.write_text(sdl)
    generated = node.run("codegen.mjs", str(path))
    assert "export type Product = {" in generated
    assert "price?: Maybe<Scalars['Float']['output']>;" in generated
    assert "stock: Scalars['Int']['output'];" in generated
    assert "export type ProductQueryInput = {" in generated
    # federated, the SDL carries the subgraph's directives and still parses
    federated = schema_sdl(Flow(federation=FEDERATION).add(uses="typed_executors:Shop").spec)
    assert 'type Product @key(fields: "id")' in federated
    assert "union _Entity = Product" in federated
