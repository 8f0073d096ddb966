"""The gRPC door of the gateway, served in-process by a real grpc.aio server over a
traversal whose transport is :class:`~meshflow.gateway.testing.ScriptedTransport` (what an
executor answers is scripted)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import grpc
import pytest

from meshflow import Document
from meshflow.client.messages import build_request, read_response
from meshflow.errors import BadRequestError, RequestError, UnavailableError
from meshflow.gateway.server import Gateway
from meshflow.gateway.testing import Call, Handler, ScriptedTransport, echo
from meshflow.gateway.topology import Node, Topology
from meshflow.gateway.traversal import Traversal
from meshflow.proto.v1 import data_request_pb2
from meshflow.wire import GATEWAY_POST, GATEWAY_STREAM

T = TypeVar("T")


def gateway(handler: Handler, *nodes: Node, max_in_flight: int = 8) -> Gateway:
    topology = Topology(nodes or (Node(name="exec0", needs=("gateway",), shards=(("x",),)),))
    return Gateway(Traversal(topology, ScriptedTransport(handler)), max_in_flight=max_in_flight)


async def serve(gw: Gateway) -> tuple[grpc.aio.Server, grpc.aio.Channel]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((gw.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


def test_unexpected_exception_of_a_step_is_internal_and_names_it() -> None:
    def crash(call: Call) -> bytes:
        raise KeyError("surprise")

    async def main() -> None:
        server, channel = await serve(gateway(crash))
        try:
            post = channel.unary_unary(GATEWAY_POST)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await post(build_request("/index", [])[1], timeout=10)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            details = info.value.details() or ""
            assert "'exec0'" in details and "'/index'" in details and "KeyError" in details
            assert "<class" not in details
        finally:
            await channel.close()
            await server.stop(None)

    run(main())


def test_a_stream_answers_every_request_when_one_step_crashes() -> None:
    def crash_on_second(call: Call) -> bytes:
        if read_response(call.data).docs.texts == ["1"]:
            raise ZeroDivisionError("bug")
        return call.data

    async def main() -> None:
        server, channel = await serve(gateway(crash_on_second))
        try:
            stream = channel.stream_stream(GATEWAY_STREAM)

            async def requests() -> AsyncIterator[bytes]:
                for i in range(3):
                    yield build_request("/", [Document(text=str(i))])[1]

            answers = [a async for a in stream(requests(), timeout=10)]
            assert len(answers) == 3
            failures = []
            for raw in answers:
                try:
                    read_response(raw)
                except RequestError as exc:
                    failures.append(exc)
            [failure] = failures
            assert type(failure) is RequestError  # an internal error of the gateway
            assert "'exec0'" in str(failure) and "ZeroDivisionError" in str(failure)
        finally:
            await channel.close()
            await server.stop(None)

    run(main())


class _Context:
    """The little of a grpc.aio servicer context the stream handler reads."""

    def time_remaining(self) -> float | None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def test_requests_cancelled_before_they_start_give_back_their_slots() -> None:
    async def slow(call: Call) -> bytes:
        await asyncio.sleep(30)
        return call.data

    gw = gateway(slow, max_in_flight=4)

    async def cancelled_stream() -> None:
        consumer: list[asyncio.Task[None]] = []

        async def requests() -> AsyncIterator[bytes]:
            # The consumer is cancelled before the tasks of these requests first run: each
            # is cancelled before it starts.
            consumer[0].cancel()
            for _ in range(3):
                yield build_request("/", [])[1]
            await asyncio.Event().wait()

        async def consume() -> None:
            async for _ in gw.stream(requests(), _Context()):  # type: ignore[arg-type]
                pass

        consumer.append(asyncio.ensure_future(consume()))
        with pytest.raises(asyncio.CancelledError):
            await consumer[0]

    async def main() -> None:
        for _ in range(10):
            await cancelled_stream()
            for _ in range(100):  # the cancelled tasks finish on the next turns of the loop
                if gw.in_flight == 0:
                    break
                await asyncio.sleep(0.01)
            assert gw.in_flight == 0
        # Every slot is free: max_in_flight requests run at once again.
        assert isinstance(gw.traversal.transport, ScriptedTransport)
        gw.traversal.transport.handler = echo
        answers = await asyncio.gather(
            *(gw.run(build_request("/", [])[1], None) for _ in range(gw.max_in_flight))
        )
        assert len(answers) == gw.max_in_flight

    run(main())


def test_a_stream_answers_every_request_whatever_each_executor_raises() -> None:
    def handler(call: Call) -> bytes:
        message = call.request
        kind = message.docs[0].text
        if kind == "down":
            raise UnavailableError("connection refused")
        if kind == "bad":
            raise BadRequestError("malformed")
        if kind == "bug":
            raise KeyError("surprise")
        if kind == "failed":
            message.status.code = data_request_pb2.Status.ERROR
            message.status.executor = "exec0"
            message.status.exception_type = "ValueError"
        return message.SerializeToString()

    kinds = ["ok", "down", "bad", "bug", "failed", "ok2"]
    gw = gateway(handler)

    async def main() -> list[bytes]:
        async def requests() -> AsyncIterator[bytes]:
            for kind in kinds:
                yield build_request("/", [Document(text=kind)], request_id=kind)[1]

        return [a async for a in gw.stream(requests(), _Context())]  # type: ignore[arg-type]

    statuses = {}
    for raw in run(main()):
        answer = data_request_pb2.DataRequest.FromString(raw)
        statuses[answer.header.request_id] = (answer.status.executor, answer.status.exception_type)
    assert statuses == {
        "ok": ("", ""),
        "down": ("exec0", "UnavailableError"),
        "bad": ("gateway", "BadRequestError"),
        "bug": ("gateway", "RequestError"),
        "failed": ("exec0", "ValueError"),
        "ok2": ("", ""),
    }
    assert gw.in_flight == 0
