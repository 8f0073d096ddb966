"""Endpoint discovery in the background: answers are cached per shard, and a silent
deployment delays nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from meshflow.gateway.discovery import EndpointCatalog
from meshflow.gateway.topology import Node, Topology
from meshflow.proto.v1 import services_pb2


def endpoints(*names: str) -> services_pb2.EndpointsResponse:
    return services_pb2.EndpointsResponse(
        endpoints=[services_pb2.Endpoint(name=n, read_only=True) for n in names]
    )


class Transport:
    """``silent`` deployments never answer; the others answer ``served[name]``."""

    def __init__(self, served: dict[str, services_pb2.EndpointsResponse], silent: set[str]):
        self.served = served
        self.silent = silent
        self.asked: list[str] = []

    async def describe(self, deployment: str, shard: int) -> services_pb2.EndpointsResponse | None:
        self.asked.append(deployment)
        if deployment in self.silent:
            await asyncio.sleep(3600)
        return self.served.get(deployment)

    async def call(self, *args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("not called")

    async def close(self) -> None:
        pass


def topology() -> Topology:
    return Topology(
        (
            Node(name="catalog", needs=("gateway",), shards=(("a",),)),
            Node(name="sleepy", needs=("gateway",), shards=(("b",),)),
        )
    )


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 20)

    asyncio.run(bounded())


def test_a_silent_deployment_delays_no_other_answer() -> None:
    async def main() -> None:
        seen: list[list[services_pb2.EndpointsResponse]] = []
        changed = asyncio.Event()

        def on_change(answers: list[services_pb2.EndpointsResponse]) -> None:
            seen.append(answers)
            changed.set()

        transport = Transport({"catalog": endpoints("/search")}, silent={"sleepy"})
        catalog = EndpointCatalog(topology(), transport, on_change)  # type: ignore[arg-type]
        catalog.start()
        try:
            await changed.wait()
            assert seen == [[endpoints("/search")]]
            assert not catalog.complete
        finally:
            await catalog.stop()

    run(main())


def test_answers_are_cached_while_a_deployment_falls_silent() -> None:
    async def main() -> None:
        seen: list[list[services_pb2.EndpointsResponse]] = []
        transport = Transport(
            {"catalog": endpoints("/search"), "sleepy": endpoints("/ping")}, silent=set()
        )
        catalog = EndpointCatalog(topology(), transport, seen.append)  # type: ignore[arg-type]
        await catalog.refresh_missing()
        assert catalog.complete and seen[-1] == [endpoints("/search"), endpoints("/ping")]
        transport.served.pop("sleepy")  # answers nothing any more
        await catalog._one_round(only_missing=False)
        assert catalog.complete and len(seen) == 2  # nothing changed, nothing forgotten
        transport.asked.clear()
        await catalog.refresh_missing()  # every shard known: no probe at all
        assert transport.asked == []

    run(main())
