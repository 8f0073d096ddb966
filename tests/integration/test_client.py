"""Clients: streaming with bounded requests in flight, order, cancellation, generated stubs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from meshflow import AsyncClient, Client, Document, DocumentArray, Flow
from meshflow.proto.v1 import data_request_pb2, services_pb2_grpc

StartFlow = Callable[[Flow], Flow]


def docs(n: int) -> DocumentArray:
    return DocumentArray(Document(text=str(i)) for i in range(n))


def test_sync_stream_bounds_in_flight_and_keeps_order(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Concurrency", name="c"))
    assert f.port is not None
    with Client(port=f.port, max_in_flight=3) as client:
        out = client.post("/work", docs(40), request_size=2)
        assert out.texts == [f"{i}done" for i in range(40)]
        [peak] = client.post("/peak", return_responses=True)
    assert 2 <= peak.results["c"]["peak"] <= 3


def test_async_stream_bounds_in_flight_and_yields_in_order(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Concurrency", name="c"))
    assert f.port is not None

    async def go() -> tuple[list[str], float]:
        async with AsyncClient(port=f.port, max_in_flight=4) as client:
            seen = []
            async for response in client.stream("/work", docs(30), request_size=3):
                seen.extend(response.docs.texts)
            peak = await client.post_one("/peak")
            return seen, peak.results["c"]["peak"]

    seen, peak = asyncio.run(go())
    assert seen == [f"{i}done" for i in range(30)]
    assert 2 <= peak <= 4


def test_async_post_merges_all_answers(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append"))
    assert f.port is not None

    async def go() -> list[str]:
        async with AsyncClient(port=f.port) as client:
            return (await client.post("/", docs(5), request_size=2)).texts

    assert asyncio.run(go()) == ["0x", "1x", "2x", "3x", "4x"]


def test_cancelled_call_stops_work_in_the_executor(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Slow", name="slow"))
    assert f.port is not None

    async def go() -> dict[str, float]:
        async with AsyncClient(port=f.port) as client:
            task = asyncio.ensure_future(
                client.post_one("/sleep", docs(1), parameters={"seconds": 1.5})
            )
            await asyncio.sleep(0.4)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(1.6)
            return (await client.post_one("/stats")).results["slow"]

    assert asyncio.run(go()) == {"started": 1.0, "finished": 0.0}


def test_generated_stubs_talk_to_the_gateway(start_flow: StartFlow) -> None:
    """An internal service in any language uses the protos; here, Python's generated stub."""
    f = start_flow(Flow().add(uses="executors:Append"))
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as channel:
        stub = services_pb2_grpc.GatewayServiceStub(channel)
        request = data_request_pb2.DataRequest(
            header=data_request_pb2.Header(endpoint="/", request_id="r1")
        )
        request.docs.add(id="a", text="t")
        answer = stub.Post(request, timeout=10)
        assert (answer.header.request_id, answer.docs[0].text) == ("r1", "tx")
        answers = list(
            stub.Stream(
                iter(
                    data_request_pb2.DataRequest(
                        header=data_request_pb2.Header(request_id=f"s{i}"),
                        docs=[request.docs[0]],
                    )
                    for i in range(5)
                ),
                timeout=10,
            )
        )
        assert sorted(a.header.request_id for a in answers) == [f"s{i}" for i in range(5)]
        assert all(a.docs[0].text == "tx" for a in answers)
