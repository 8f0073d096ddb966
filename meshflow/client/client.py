"""Clients of a Flow's gateway: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import grpc

from meshflow.client.messages import (
    Inputs,
    Response,
    batches,
    build_request,
    read_response,
    request_id_of,
    rpc_error,
)
from meshflow.document import DocumentArray
from meshflow.errors import ConfigError
from meshflow.wire import GATEWAY_POST, GATEWAY_STREAM, client_channel_options

if TYPE_CHECKING:
    from meshflow.client.graphql import GraphQLSession

PROTOCOLS = ("grpc", "graphql")


def _check_protocol(protocol: str, allowed: Sequence[str] = PROTOCOLS, who: str = "Client") -> None:
    if protocol not in allowed:
        hint = ""
        if protocol in PROTOCOLS:
            hint = " (Client(protocol='graphql') speaks GraphQL, blocking)"
        raise ConfigError(
            f"{who}: protocol {protocol!r} is not supported; use one of {tuple(allowed)}{hint}"
        )


def _merge(responses: Iterable[Response]) -> DocumentArray:
    merged = DocumentArray()
    for response in responses:
        merged.extend(response.docs)
    return merged


class _Reorder:
    """Yields answers in the order their requests were sent."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.waiting: dict[str, bytes] = {}
        self.next = 0

    def sent(self, request_id: str) -> None:
        self.order.append(request_id)

    def received(self, data: bytes) -> list[bytes]:
        self.waiting[request_id_of(data)] = data
        ready = []
        while self.next < len(self.order) and self.order[self.next] in self.waiting:
            ready.append(self.waiting.pop(self.order[self.next]))
            self.next += 1
        return ready


def _target(host: str, port: int, who: str) -> str:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{who} needs the gateway's port (1-65535), got {port!r}")
    return f"{host}:{port}"


def _metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    if token is None:
        return None
    if not isinstance(token, str) or not token.strip() or any(c in token for c in "\r\n"):
        raise ConfigError("token must be a JWT string (without 'Bearer ')")
    return (("authorization", f"Bearer {token.strip()}"),)


class Posting:
    """The blocking ``post`` of :class:`Client`, shared by everything that hands out one
    (a running :class:`~meshflow.Flow` posts through its own client)."""

    def _blocking_client(self) -> Client:
        raise NotImplementedError

    @overload
    def post(
        self,
        on: str,
        inputs: Inputs = None,
        parameters: Mapping[str, Any] | None = None,
        target_executor: str | None = None,
        request_size: int = 100,
        *,
        timeout: float | None = None,
        return_responses: Literal[False] = False,
    ) -> DocumentArray: ...

    @overload
    def post(
        self,
        on: str,
        inputs: Inputs = None,
        parameters: Mapping[str, Any] | None = None,
        target_executor: str | None = None,
        request_size: int = 100,
        *,
        timeout: float | None = None,
        return_responses: Literal[True],
    ) -> list[Response]: ...

    def post(
        self,
        on: str,
        inputs: Inputs = None,
        parameters: Mapping[str, Any] | None = None,
        target_executor: str | None = None,
        request_size: int = 100,
        *,
        timeout: float | None = None,
        return_responses: bool = False,
    ) -> DocumentArray | list[Response]:
        """Send ``inputs`` to endpoint ``on`` in requests of ``request_size`` documents.

        Returns the documents of all answers, in request order (or the answers themselves
        with ``return_responses=True``). ``timeout`` (seconds) is the deadline of the whole
        request, every hop included. Raises :class:`~meshflow.errors.RequestError`
        subclasses: :class:`~meshflow.errors.ExecutorError` names the executor that failed.
        """
        responses = self._blocking_client().send(
            on,
            inputs,
            parameters=parameters,
            target_executor=target_executor,
            request_size=request_size,
            timeout=timeout,
        )
        return responses if return_responses else _merge(responses)


def _check_retries(retries: int) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a whole number >= 0, got {retries!r}")


class Client(Posting):
    """A blocking client of a Flow's gateway.

    ::

        client = Client(port=12345)
        docs = client.post('/search', DocumentArray(...), parameters={'limit': 5})
        web = Client(port=f.graphql_port, protocol='graphql')

    ``protocol='grpc'`` talks to the gateway's gRPC port; ``'graphql'`` to its HTTP port
    (mutations over HTTP, several requests as one subscription over a WebSocket). ``timeout``
    (seconds) becomes the deadline of the call and of every hop behind it. ``token`` (a JWT)
    is sent with every call: ``authorization`` metadata on gRPC, the ``Authorization`` header
    on HTTP, the ``connection_init`` payload on a WebSocket. A request the gateway refuses
    for overload (``RESOURCE_EXHAUSTED``, HTTP 503 or 429) is sent again up to ``retries``
    times (4 at most over gRPC), after the wait the gateway asks for (``grpc-retry-pushback-ms``,
    ``Retry-After``) with jitter, and only while the wait fits the call's ``timeout``;
    then :class:`~meshflow.OverloadedError` is raised.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        protocol: str = "grpc",
        timeout: float | None = None,
        max_in_flight: int = 16,
        token: str | None = None,
        retries: int = 3,
    ) -> None:
        _check_protocol(protocol)
        self.target = _target(host, port, "Client")
        self.protocol = protocol
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._metadata = _metadata(token)
        _check_retries(retries)
        self._graphql: GraphQLSession | None = None
        if protocol == "graphql":
            # lazy: keeps `import meshflow` cheap: httpx and websockets (~110 ms) only for GraphQL
            from meshflow.client.graphql import GraphQLSession

            self._graphql = GraphQLSession(
                host, port, timeout, max_in_flight, token=token, retries=retries
            )
        self._channel = grpc.insecure_channel(self.target, options=client_channel_options(retries))
        self._post = self._channel.unary_unary(GATEWAY_POST)
        self._stream = self._channel.stream_stream(GATEWAY_STREAM)

    def close(self) -> None:
        if self._graphql is not None:
            self._graphql.close()
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _blocking_client(self) -> Client:
        return self

    def send(
        self,
        on: str,
        inputs: Inputs = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        target_executor: str | None = None,
        request_size: int = 100,
        timeout: float | None = None,
    ) -> list[Response]:
        """Send ``inputs`` and return every answer, in request order."""
        if self._graphql is not None:
            return self._graphql.send(
                on,
                list(batches(inputs, request_size)),
                dict(parameters) if parameters else None,
                target_executor,
                timeout,
            )
        requests = [
            build_request(on, batch, parameters=parameters, target_executor=target_executor)
            for batch in batches(inputs, request_size)
        ]
        timeout = self.timeout if timeout is None else timeout
        if len(requests) == 1:
            try:
                raw = self._post(requests[0][1], timeout=timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                raise rpc_error(exc, self.target) from None
            responses = [read_response(raw)]
        else:
            responses = [read_response(raw) for raw in self.stream_raw(requests, timeout=timeout)]
        return responses

    def stream_raw(
        self, requests: Iterable[tuple[str, bytes]], *, timeout: float | None = None
    ) -> Iterator[bytes]:
        """Send serialized requests on one stream, at most ``max_in_flight`` unanswered;
        yield the serialized answers in request order."""
        slots = threading.Semaphore(self.max_in_flight)
        done = threading.Event()
        reorder = _Reorder()
        lock = threading.Lock()

        def feed() -> Iterator[bytes]:
            for request_id, data in requests:
                while not slots.acquire(timeout=0.1):
                    if done.is_set():
                        return
                with lock:
                    reorder.sent(request_id)
                yield data

        call = self._stream(feed(), timeout=timeout, metadata=self._metadata)
        try:
            for raw in call:
                slots.release()
                with lock:
                    ready = reorder.received(raw)
                yield from ready
        except grpc.RpcError as exc:
            raise rpc_error(exc, self.target) from None
        finally:
            done.set()
            call.cancel()


class AsyncClient:
    """An asyncio client of a Flow's gateway; the same calls as :class:`Client`, awaited.

    ::

        async with AsyncClient(port=12345) as client:
            docs = await client.post('/index', docs)
            async for response in client.stream('/search', many_docs, request_size=10):
                ...

    Overload refusals are retried as :class:`Client` does (``retries``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        protocol: str = "grpc",
        timeout: float | None = None,
        max_in_flight: int = 16,
        token: str | None = None,
        retries: int = 3,
    ) -> None:
        _check_protocol(protocol, ("grpc",), "AsyncClient")
        self.target = _target(host, port, "AsyncClient")
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._metadata = _metadata(token)
        _check_retries(retries)
        self._channel = grpc.aio.insecure_channel(
            self.target, options=client_channel_options(retries)
        )
        self._post = self._channel.unary_unary(GATEWAY_POST)
        self._stream = self._channel.stream_stream(GATEWAY_STREAM)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def post(
        self,
        on: str,
        inputs: Inputs = None,
        parameters: Mapping[str, Any] | None = None,
        target_executor: str | None = None,
        request_size: int = 100,
        *,
        timeout: float | None = None,
    ) -> DocumentArray:
        """Like :meth:`Client.post`: the documents of all answers, in request order."""
        responses = [
            r
            async for r in self.stream(
                on,
                inputs,
                parameters,
                target_executor,
                request_size,
                timeout=timeout,
            )
        ]
        return _merge(responses)

    async def post_one(
        self,
        on: str,
        inputs: Inputs = None,
        parameters: Mapping[str, Any] | None = None,
        target_executor: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Response:
        """Send all ``inputs`` in one unary request and return its answer."""
        docs = list(next(batches(inputs, 1 << 62)))
        _, data = build_request(on, docs, parameters=parameters, target_executor=target_executor)
        try:
            raw = await self._post(
                data,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, self.target) from None
        return read_response(raw)

    async def stream(
        self,
        on: str,
        inputs: Inputs = None,
        parameters: Mapping[str, Any] | None = None,
        target_executor: str | None = None,
        request_size: int = 100,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[Response]:
        """Send ``inputs`` in requests of ``request_size`` docs on one stream, with at most
        ``max_in_flight`` unanswered; yield each answer in request order."""
        requests = (
            build_request(on, batch, parameters=parameters, target_executor=target_executor)
            for batch in batches(inputs, request_size)
        )
        async for raw in self.stream_raw(requests, timeout=timeout):
            yield read_response(raw)

    async def stream_raw(
        self, requests: Iterable[tuple[str, bytes]], *, timeout: float | None = None
    ) -> AsyncIterator[bytes]:
        """Serialized requests in, serialized answers out, in request order."""
        slots = asyncio.Semaphore(self.max_in_flight)
        reorder = _Reorder()

        async def feed() -> AsyncIterator[bytes]:
            for request_id, data in requests:
                await slots.acquire()
                reorder.sent(request_id)
                yield data

        call = self._stream(
            feed(), timeout=self.timeout if timeout is None else timeout, metadata=self._metadata
        )
        try:
            async for raw in call:
                slots.release()
                for item in reorder.received(raw):
                    yield item
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, self.target) from None
        finally:
            call.cancel()
