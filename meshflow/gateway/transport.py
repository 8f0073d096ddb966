"""How the gateway reaches a deployment: the one interface every mesh implements.

``DirectTransport`` (``mesh='direct'``) calls executor replicas itself: round-robin over the
replicas of a shard, and a call that could not be delivered to a replica (nothing listens, the
connection was refused) is tried on the next one. A call a replica took and then lost (the
process died mid-request) is not retried: that request fails naming the executor, so a request
that crashes executors cannot take down every replica in turn.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, TypeAlias

import grpc
from opentelemetry import trace

from meshflow.errors import (
    BadRequestError,
    DeadlineExceeded,
    RequestError,
    UnavailableError,
    for_grpc_code,
)
from meshflow.proto.v1 import services_pb2
from meshflow.wire import EXECUTOR_ENDPOINTS, EXECUTOR_PROCESS, channel_options

Metadata: TypeAlias = tuple[tuple[str, str], ...]
"""gRPC metadata a call carries (the tracing header for the sidecars, when tracing)."""

_NOT_DELIVERED = ("failed to connect", "connection refused", "no such file", "connect failed")


def _not_delivered(exc: grpc.aio.AioRpcError) -> bool:
    """True when the call never reached the replica, so trying another one is safe."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (exc.details() or "").lower()
    return any(marker in details for marker in _NOT_DELIVERED)


class Transport(Protocol):
    """Sends one serialized DataRequest to one shard of a deployment."""

    async def call(
        self,
        deployment: str,
        shard: int,
        data: bytes,
        timeout: float | None,
        metadata: Metadata | None = None,
    ) -> bytes:
        """Return the executor's serialized answer, or raise a :class:`RequestError`."""
        ...

    async def close(self) -> None:
        """Close every connection."""
        ...

    async def describe(self, deployment: str, shard: int) -> services_pb2.EndpointsResponse | None:
        """The endpoints one shard serves, or None when it does not answer."""
        ...


async def _endpoints(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
) -> services_pb2.EndpointsResponse | None:
    try:
        raw = await call(services_pb2.EndpointsRequest().SerializeToString(), timeout=2.0)
    except grpc.aio.AioRpcError:
        return None
    return services_pb2.EndpointsResponse.FromString(raw)


class _Replica:
    __slots__ = ("address", "channel", "endpoints", "process")

    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=channel_options())
        self.process = self.channel.unary_unary(EXECUTOR_PROCESS)
        self.endpoints = self.channel.unary_unary(EXECUTOR_ENDPOINTS)


class DirectTransport:
    """Calls executor replicas straight from the gateway, with round-robin and fail-over."""

    def __init__(self, shards: Mapping[str, Sequence[Sequence[str]]]) -> None:
        """``shards`` maps each deployment to, per shard, the addresses of its replicas."""
        self._replicas: dict[tuple[str, int], list[_Replica]] = {}
        self._cursor: dict[tuple[str, int], Iterator[int]] = {}
        self.tracing = False
        """When tracing, the traversal step's span is told which replica took the call."""
        for name, per_shard in shards.items():
            for shard, addresses in enumerate(per_shard):
                key = (name, shard)
                self._replicas[key] = [_Replica(a) for a in addresses]
                self._cursor[key] = itertools.cycle(range(len(addresses)))

    async def call(
        self,
        deployment: str,
        shard: int,
        data: bytes,
        timeout: float | None,
        metadata: Metadata | None = None,
    ) -> bytes:
        key = (deployment, shard)
        replicas = self._replicas[key]
        first = next(self._cursor[key])
        last_error: grpc.aio.AioRpcError | None = None
        for attempt in range(len(replicas)):
            index = (first + attempt) % len(replicas)
            replica = replicas[index]
            if self.tracing:
                _note_replica(index, replica.address)
            try:
                answer: bytes = await replica.process(data, timeout=timeout, metadata=metadata)
                return answer
            except grpc.aio.AioRpcError as exc:
                if not _not_delivered(exc):
                    raise rpc_error_to_meshflow(exc, deployment) from None
                last_error = exc
        assert last_error is not None
        raise rpc_error_to_meshflow(last_error, deployment) from None

    async def close(self) -> None:
        for replicas in self._replicas.values():
            for replica in replicas:
                await replica.channel.close()

    async def describe(self, deployment: str, shard: int) -> services_pb2.EndpointsResponse | None:
        for replica in self._replicas[(deployment, shard)]:
            found = await _endpoints(replica.endpoints)
            if found is not None:
                return found
        return None


def _note_replica(index: int, address: str) -> None:
    span = trace.get_current_span()
    span.set_attribute("meshflow.replica", index)
    span.set_attribute("server.address", address)


class EnvoyTransport:
    """Calls deployments through the gateway's Envoy sidecar (``mesh='envoy'``).

    One channel per shard, all to the sidecar's unix socket; the gRPC authority names the
    Envoy cluster. Load balancing, retries on another replica, health checks and outlier
    detection are Envoy's.
    """

    def __init__(self, egress: str, clusters: Mapping[tuple[str, int], str]) -> None:
        self._calls: dict[tuple[str, int], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._endpoints: dict[tuple[str, int], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._channels: list[grpc.aio.Channel] = []
        for key, authority in clusters.items():
            options = [*channel_options(), ("grpc.default_authority", authority)]
            channel = grpc.aio.insecure_channel(egress, options=options)
            self._channels.append(channel)
            self._calls[key] = channel.unary_unary(EXECUTOR_PROCESS)
            self._endpoints[key] = channel.unary_unary(EXECUTOR_ENDPOINTS)

    async def call(
        self,
        deployment: str,
        shard: int,
        data: bytes,
        timeout: float | None,
        metadata: Metadata | None = None,
    ) -> bytes:
        try:
            answer: bytes = await self._calls[(deployment, shard)](
                data, timeout=timeout, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise rpc_error_to_meshflow(exc, deployment) from None
        return answer

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def describe(self, deployment: str, shard: int) -> services_pb2.EndpointsResponse | None:
        return await _endpoints(self._endpoints[(deployment, shard)])


# The statuses an executor ends a call with that are the caller's failure, and how the gateway
# words them; any other status (an executor refusing the gateway's voucher, say) is the
# gateway's own failure. Which error it is comes from the status code (errors.for_grpc_code).
_PASSED_ON: dict[type[RequestError], str] = {
    DeadlineExceeded: "{where} did not answer before the request's deadline",
    BadRequestError: "{where} refused the request: {detail}",
    UnavailableError: "{where} is unreachable: {detail}",
}


def rpc_error_to_meshflow(exc: grpc.aio.AioRpcError, deployment: str) -> RequestError:
    """Map a failed call to an executor onto meshflow's errors."""
    code = exc.code()
    detail = exc.details() or code.name
    where = f"executor {deployment!r}"
    kind = for_grpc_code(code.name, tuple(_PASSED_ON))
    wording = _PASSED_ON.get(kind, "{where} failed with gRPC status {code}: {detail}")
    return kind(wording.format(where=where, code=code.name, detail=detail))
