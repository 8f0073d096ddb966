"""A :class:`~meshflow.gateway.transport.Transport` whose executors are a Python function.

``ScriptedTransport`` is to the gateway what httpx's ``MockTransport`` is to httpx: the one
seam of the traversal engine, filled by a test. Every call is recorded, then answered by the
handler (sync or async), which sees the call and returns the serialized answer or raises
a :class:`~meshflow.errors.RequestError` as a real transport would. Like gRPC, the fake
honours the call's timeout: a handler still busy when it passes ends the call with
:class:`~meshflow.errors.DeadlineExceeded`.

Example::

    def handler(call: Call) -> bytes:
        if call.deployment == "ranker":
            raise UnavailableError("ranker is down")
        return call.data  # every other executor answers with the request unchanged

    transport = ScriptedTransport(handler)
    traversal = Traversal(topology, transport)
    answer = await traversal.run(request_bytes, "/search", deadline=None)
    assert [c.deployment for c in transport.calls] == ["encoder", "ranker"]
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

from meshflow.document.columnar import to_rows
from meshflow.errors import DeadlineExceeded
from meshflow.gateway.transport import Metadata
from meshflow.proto.v1 import data_request_pb2, services_pb2


@dataclass(frozen=True)
class Call:
    """One call the traversal made to one shard of a deployment."""

    deployment: str
    shard: int
    data: bytes
    timeout: float | None
    metadata: Metadata | None = None

    @property
    def request(self) -> data_request_pb2.DataRequest:
        """The DataRequest the call carried, decoded, its documents in the row layout (``docs``)
        whichever layout it came in, so that handlers can read and edit them."""
        request = data_request_pb2.DataRequest.FromString(self.data)
        to_rows(request)
        return request


Handler: TypeAlias = Callable[[Call], bytes | Awaitable[bytes]]
"""Answers one :class:`Call` with a serialized DataRequest (or raises a RequestError)."""


def echo(call: Call) -> bytes:
    """The default handler: every executor answers with the request as it came."""
    return call.data


class ScriptedTransport:
    """Answers each call with ``handler(call)`` and keeps every call in :attr:`calls`.

    ``endpoints`` is what :meth:`describe` reports per deployment (an empty
    ``EndpointsResponse`` for any other; ``None``, a silent shard, for those mapped to None).
    """

    def __init__(
        self,
        handler: Handler = echo,
        *,
        endpoints: Mapping[str, services_pb2.EndpointsResponse | None] | None = None,
    ) -> None:
        self.handler = handler
        self.endpoints = dict(endpoints or {})
        self.calls: list[Call] = []
        self.closed = False

    async def call(
        self,
        deployment: str,
        shard: int,
        data: bytes,
        timeout: float | None,
        metadata: Metadata | None = None,
    ) -> bytes:
        call = Call(deployment, shard, data, timeout, metadata)
        self.calls.append(call)
        try:
            return await asyncio.wait_for(self._answer(call), timeout)
        except TimeoutError:
            # The wording of the real transports (transport.rpc_error_to_meshflow).
            raise DeadlineExceeded(
                f"executor {deployment!r} did not answer before the request's deadline"
            ) from None

    async def _answer(self, call: Call) -> bytes:
        answer = self.handler(call)
        if inspect.isawaitable(answer):
            return await answer
        return answer

    async def close(self) -> None:
        self.closed = True

    async def describe(self, deployment: str, shard: int) -> services_pb2.EndpointsResponse | None:
        return self.endpoints.get(deployment, services_pb2.EndpointsResponse())

    def to(self, deployment: str) -> list[Call]:
        """The calls made to ``deployment``, in the order they were made."""
        return [c for c in self.calls if c.deployment == deployment]
