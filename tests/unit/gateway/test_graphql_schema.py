"""The GraphQL schema of the gateway, executed in-process over a gateway whose run is
scripted: an unexpected exception still ends every operation with a coded error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import pytest

from meshflow.gateway.http import make_schema
from meshflow.gateway.server import Gateway
from meshflow.gateway.topology import Node, Topology
from meshflow.gateway.transport import DirectTransport
from meshflow.gateway.traversal import Traversal
from meshflow.spec.limits import GraphQLLimits


class BrokenGateway(Gateway):
    """A gateway whose every run fails with an exception that is not meshflow's."""

    async def run(self, *args: Any, **kwargs: Any) -> bytes:
        raise ZeroDivisionError("a bug")


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(bounded())


def context() -> dict[str, Any]:
    topology = Topology((Node(name="exec0", needs=("gateway",), shards=(("127.0.0.1:1",),)),))
    gateway = BrokenGateway(Traversal(topology, DirectTransport({"exec0": (("127.0.0.1:1",),)})))
    return {"gateway": gateway, "max_docs": 100, "door": "websocket"}


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL)


def test_a_subscription_ends_with_a_coded_error_on_an_unexpected_exception() -> None:
    schema = make_schema(GraphQLLimits())

    async def main() -> list[Any]:
        results = await schema.subscribe(
            'subscription { stream(on: "/", batches: [[{text: "a"}], [{text: "b"}]]) '
            "{ requestId } }",
            context_value=context(),
        )
        return [r async for r in results]  # type: ignore[union-attr]

    results = run(main())
    assert len(results) == 1
    [error] = results[0].errors
    assert error.extensions["code"] == "INTERNAL_SERVER_ERROR"
    assert "ZeroDivisionError" in error.message and "'/'" in error.message


def test_a_mutation_ends_with_a_coded_error_on_an_unexpected_exception() -> None:
    schema = make_schema(GraphQLLimits())

    async def main() -> Any:
        return await schema.execute(
            'mutation { post(on: "/x") { requestId } }', context_value=context()
        )

    result = run(main())
    [error] = result.errors
    assert error.extensions["code"] == "INTERNAL_SERVER_ERROR"
