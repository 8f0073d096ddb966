"""Each door answers an error with its class's codes, and each client reads the class back.

A gateway whose request path raises a scripted error is served in-process: over gRPC by a
real grpc.aio server (read by the real :class:`AsyncClient`), over HTTP by the real ASGI
app (``POST /post`` and GraphQL, read by the GraphQL client's mapping).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest

from meshflow import AsyncClient
from meshflow.client.graphql import raise_errors
from meshflow.errors import (
    REFUSALS,
    ExecutorError,
    ForbiddenError,
    RequestError,
    UnauthenticatedError,
    request_errors,
)
from meshflow.gateway.http import make_app
from meshflow.gateway.server import Gateway
from meshflow.gateway.testing import Call, ScriptedTransport
from meshflow.gateway.topology import Node, Topology
from meshflow.gateway.traversal import Traversal
from meshflow.identity import Identity
from meshflow.proto.v1 import data_request_pb2
from meshflow.spec.limits import GraphQLLimits

ERRORS = request_errors()


def _no_executor(call: Call) -> bytes:
    raise AssertionError("no executor is called (the scripted gateway answers first)")


class _Scripted(Gateway):
    """A gateway whose request path ends with ``answer(data)``."""

    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        topology = Topology((Node(name="exec0", needs=("gateway",), shards=(("x",),)),))
        super().__init__(Traversal(topology, ScriptedTransport(_no_executor)))
        self.answer = answer

    async def _run(
        self, data: bytes, deadline: float | None, identity: Identity | None, door: str
    ) -> bytes:
        return self.answer(data)


def _raising(exc: RequestError) -> _Scripted:
    def answer(data: bytes) -> bytes:
        raise exc

    return _Scripted(answer)


def _executor_failed(data: bytes) -> bytes:
    """What the traversal answers when executor 'enc' raised at '/fail'."""
    answer = data_request_pb2.DataRequest.FromString(data)
    answer.status.CopyFrom(
        data_request_pb2.Status(
            code=data_request_pb2.Status.ERROR,
            message="bad input",
            executor="enc",
            endpoint="/fail",
            exception_type="ValueError",
        )
    )
    return answer.SerializeToString()


def _error(cls: type[RequestError]) -> RequestError:
    if cls is ForbiddenError:
        return ForbiddenError("the token lacks a scope", scope="write")
    return cls(f"refused in a test ({cls.__name__})")


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 30)

    asyncio.run(bounded())


async def _grpc_client(gateway: Gateway) -> tuple[grpc.aio.Server, AsyncClient]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((gateway.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, AsyncClient("127.0.0.1", port, timeout=10)


def _grpc_carries(cls: type[RequestError]) -> type[RequestError]:
    """What a unary gRPC answer can tell of ``cls``: its most general ancestor (itself
    included) among the gateway's refusals with the same status code; RequestError else."""
    for base in reversed(cls.__mro__):
        if base in REFUSALS and getattr(base, "grpc_code", None) == cls.grpc_code:
            assert isinstance(base, type) and issubclass(base, RequestError)
            return base
    return RequestError


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_grpc_post_status_comes_back_as_the_class(cls: type[RequestError]) -> None:
    sent = _error(cls)

    async def main() -> None:
        server, client = await _grpc_client(_raising(sent))
        try:
            with pytest.raises(RequestError) as info:
                await client.post_one("/index")
        finally:
            await client.close()
            await server.stop(None)
        got = info.value
        assert type(got) is _grpc_carries(cls)
        assert isinstance(sent, type(got))
        assert str(sent) in str(got)
        if isinstance(got, ForbiddenError):
            assert got.scope == "write"

    run(main())


def test_every_refusal_of_its_own_grpc_code_comes_back_exactly() -> None:
    exact = [cls for cls in REFUSALS if _grpc_carries(cls) is cls]
    assert {c.__name__ for c in exact} >= {
        "BadRequestError",
        "OverloadedError",
        "DeadlineExceeded",
        "UnavailableError",
        "UnauthenticatedError",
        "ForbiddenError",
    }


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_a_stream_answer_comes_back_as_the_class(cls: type[RequestError]) -> None:
    sent = _error(cls)

    async def main() -> None:
        server, client = await _grpc_client(_raising(sent))
        try:
            with pytest.raises(RequestError) as info:
                async for _ in client.stream("/index"):
                    pass
        finally:
            await client.close()
            await server.stop(None)
        assert type(info.value) is cls
        if cls is not ExecutorError:  # an ExecutorError's text names the executor again
            assert str(info.value) == str(sent)
        if isinstance(info.value, ForbiddenError):
            assert info.value.scope == "write"

    run(main())


def test_an_executor_failure_over_grpc_is_an_executor_error_naming_it() -> None:
    async def main() -> None:
        server, client = await _grpc_client(_Scripted(_executor_failed))
        try:
            with pytest.raises(ExecutorError) as info:
                await client.post_one("/fail")
        finally:
            await client.close()
            await server.stop(None)
        assert (info.value.executor, info.value.endpoint) == ("enc", "/fail")
        assert info.value.exception_type == "ValueError"

    run(main())


async def _http(gateway: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    app = make_app(gateway, GraphQLLimits())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        return await http.post(path, json=body, timeout=10)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_rest_post_answers_with_the_class_status_and_code(cls: type[RequestError]) -> None:
    sent = _error(cls)

    async def main() -> None:
        response = await _http(_raising(sent), "/post", {"on": "/index", "docs": [{}]})
        assert response.status_code == cls.http_status
        [error] = response.json()["errors"]
        assert error == {"message": str(sent), "extensions": sent.extensions()}
        challenge = response.headers.get("www-authenticate", "")
        if cls is ForbiddenError:
            assert 'error="insufficient_scope"' in challenge and 'scope="write"' in challenge
        elif issubclass(cls, UnauthenticatedError):
            assert challenge.startswith('Bearer realm="meshflow"')
        else:
            assert not challenge

    run(main())


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_graphql_error_has_the_class_code_and_the_client_reads_it_back(
    cls: type[RequestError],
) -> None:
    sent = _error(cls)
    query = 'mutation { post(on: "/index") { requestId } }'

    async def main() -> None:
        response = await _http(_raising(sent), "/graphql", {"query": query})
        assert response.status_code == 200
        [error] = response.json()["errors"]
        assert error["extensions"] == sent.extensions()
        assert error["message"] == str(sent)
        with pytest.raises(RequestError) as info:
            raise_errors([error])
        got = type(info.value)
        assert issubclass(cls, got) and got.graphql_code == cls.graphql_code
        assert got is cls or cls.__base__ is got  # only a subclass sharing a code folds

    run(main())


def test_an_executor_failure_over_http_names_it_on_both_doors() -> None:
    async def main() -> None:
        gateway = _Scripted(_executor_failed)
        rest = await _http(gateway, "/post", {"on": "/fail"})
        graphql = await _http(
            gateway, "/graphql", {"query": 'mutation { post(on: "/fail") { requestId } }'}
        )
        assert rest.status_code == ExecutorError.http_status == 502
        for error in (rest.json()["errors"][0], graphql.json()["errors"][0]):
            assert error["extensions"] == {
                "code": "EXECUTOR_ERROR",
                "executor": "enc",
                "endpoint": "/fail",
                "exceptionType": "ValueError",
            }
            assert "bad input" in error["message"]
        assert rest.json()["errors"][0]["message"] == graphql.json()["errors"][0]["message"]

    run(main())
