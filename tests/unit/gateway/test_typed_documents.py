"""The typed documents of a Flow from its executors' answers: one shape per type name."""

from __future__ import annotations

import pytest

from meshflow.errors import ConfigError
from meshflow.gateway.doctypes import typed_documents
from meshflow.proto.v1 import services_pb2 as pb


def product(*fields: str, description: str = "") -> pb.DocType:
    return pb.DocType(
        name="Product",
        description=description,
        fields=[pb.DocField(name=f, type="str", source=f"tags.{f}") for f in fields],
    )


def answer(executor: str, *endpoints: pb.Endpoint) -> pb.EndpointsResponse:
    return pb.EndpointsResponse(executor=executor, endpoints=list(endpoints))


def test_endpoints_types_inputs_and_outputs() -> None:
    look = pb.DocType(
        name="Look",
        fields=[pb.DocField(name="matches", type="doc", source="matches", doc=product("a"))],
    )
    query = pb.DocType(name="Query2", fields=[pb.DocField(name="text", type="str")])
    typed = typed_documents(
        [
            answer("enc", pb.Endpoint(name="/search", read_only=True)),
            answer("rank", pb.Endpoint(name="/search", read_only=True, doc=query, returns=look)),
            answer("store", pb.Endpoint(name="/add", doc=product("a"))),
        ]
    )
    assert set(typed.endpoints) == {"/search", "/add"}
    assert typed.endpoints["/add"].returns == "Product"  # what it takes, by default
    assert not typed.endpoints["/add"].read_only and typed.endpoints["/search"].read_only
    assert typed.inputs == {"Query2", "Product"}
    assert typed.outputs == {"Look", "Product"}


def test_one_name_two_shapes_is_refused_naming_both_executors() -> None:
    with pytest.raises(ConfigError) as refused:
        typed_documents(
            [
                answer("shop", pb.Endpoint(name="/a", returns=product("title"))),
                answer("other", pb.Endpoint(name="/b", returns=product("title", "price"))),
            ]
        )
    assert "two typed documents are named 'Product'" in str(refused.value)
    assert "'shop'" in str(refused.value) and "'other'" in str(refused.value)


def test_descriptions_do_not_make_another_shape() -> None:
    typed = typed_documents(
        [
            answer("shop", pb.Endpoint(name="/a", returns=product("t", description="one"))),
            answer("other", pb.Endpoint(name="/b", returns=product("t", description="two"))),
        ]
    )
    assert set(typed.types) == {"Product"}


def test_one_endpoint_typed_two_ways_and_reserved_names_are_refused() -> None:
    other = pb.DocType(name="Item", fields=[pb.DocField(name="id", type="id", source="id")])
    with pytest.raises(ConfigError, match="executors serving one endpoint must declare"):
        typed_documents(
            [
                answer("a", pb.Endpoint(name="/s", returns=product("t"))),
                answer("b", pb.Endpoint(name="/s", returns=other)),
            ]
        )
    with pytest.raises(ConfigError, match="named like a type of the gateway's own schema"):
        typed_documents([answer("a", pb.Endpoint(name="/s", returns=pb.DocType(name="Document")))])
