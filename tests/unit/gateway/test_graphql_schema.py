"""The GraphQL schema of the gateway, executed in-process over a gateway whose run or whose
executors are scripted: an unexpected exception still ends every operation with a coded
error, and the ``stream`` subscription answers every batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import pytest

from meshflow.gateway.http import make_schema
from meshflow.gateway.server import Gateway
from meshflow.gateway.testing import Call, ScriptedTransport
from meshflow.gateway.topology import Node, Topology
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
    gateway = BrokenGateway(Traversal(topology, ScriptedTransport()))
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


def scripted_context(transport: ScriptedTransport) -> dict[str, Any]:
    topology = Topology((Node(name="exec0", needs=("gateway",), shards=(("x",),)),))
    return {"gateway": Gateway(Traversal(topology, transport)), "max_docs": 100}


def subscribe(batches: str, transport: ScriptedTransport, max_in_flight: int = 16) -> list[Any]:
    schema = make_schema(GraphQLLimits())
    query = (
        f'subscription {{ stream(on: "/", batches: {batches}, maxInFlight: {max_in_flight}) '
        "{ batch docs { text } } }"
    )

    async def main() -> list[Any]:
        results = await schema.subscribe(query, context_value=scripted_context(transport))
        return [r async for r in results]  # type: ignore[union-attr]

    result: list[Any] = run(main())
    return result


def test_a_subscription_answers_every_batch_at_most_max_in_flight_at_once() -> None:
    running = 0
    most = 0

    async def handler(call: Call) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.001)
        running -= 1
        return call.data

    batches = "[" + ", ".join(f'[{{text: "{i}"}}]' for i in range(6)) + "]"
    results = subscribe(batches, ScriptedTransport(handler), max_in_flight=2)
    assert all(not r.errors for r in results)
    got = {r.data["stream"]["batch"]: r.data["stream"]["docs"][0]["text"] for r in results}
    assert got == {i: str(i) for i in range(6)}
    assert most == 2


def test_a_failing_executor_ends_the_subscription_with_an_error_naming_it() -> None:
    def handler(call: Call) -> bytes:
        message = call.request
        if message.docs[0].text == "bad":
            message.status.code = message.status.ERROR
            message.status.executor = "exec0"
            message.status.message = "cannot"
        return message.SerializeToString()

    results = subscribe('[[{text: "bad"}]]', ScriptedTransport(handler))
    [result] = results
    [error] = result.errors
    assert error.extensions["code"] == "EXECUTOR_ERROR"
    assert error.extensions["executor"] == "exec0"
