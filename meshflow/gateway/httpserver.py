"""The HTTP door's server: uvicorn serving the gateway's ASGI app
(:func:`~meshflow.gateway.http.make_app`) on a socket bound before start, inside the gateway's
own event loop, with request heads bounded while they are read."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from http import HTTPStatus

import uvicorn
from starlette.types import ASGIApp


class HttpDoor:
    """uvicorn serving :func:`make_app` on an already bound socket, in the running loop.

    Request heads (request line and headers) larger than ``max_header_bytes`` are refused
    with 431 before the app sees them; WebSocket messages are bounded by
    ``max_message_bytes`` as HTTP bodies are.
    """

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        max_header_bytes: int,
        max_message_bytes: int,
        max_head_seconds: float = 10.0,
        max_body_seconds: float = 30.0,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for
        # listening sockets made so; without it each answer waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        # A restarted gateway binds its port again at once, even while connections of the
        # previous process linger in TIME_WAIT (as every server does).
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(
                f"the GraphQL door cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        self.port: int = self.sock.getsockname()[1]
        self.config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            # A client's address is its socket's: X-Forwarded-For from anyone on loopback
            # (uvicorn's default trust) would let a client choose its own tarpit key.
            proxy_headers=False,
            http=bounded_http_protocol(max_header_bytes, max_head_seconds, max_body_seconds),
            h11_max_incomplete_event_size=max_header_bytes,
            ws_max_size=max_message_bytes,
        )
        self.server = uvicorn.Server(self.config)
        self._ticks: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # uvicorn.Server.serve() would install its own signal handlers; the gateway owns
        # those, so run its parts: load, start on our socket, tick in the background.
        if not self.config.loaded:
            self.config.load()
        self.server.lifespan = self.config.lifespan_class(self.config)
        await self.server.startup(sockets=[self.sock])
        self._ticks = asyncio.ensure_future(self.server.main_loop())

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._ticks is not None:
            await self._ticks
        await self.server.shutdown(sockets=[self.sock])
        self.sock.close()


def bounded_http_protocol(
    limit: int, seconds: float = 10.0, body_seconds: float = 30.0
) -> type[asyncio.Protocol] | str:
    """uvicorn's fast HTTP protocol (httptools) with bounds on request heads.

    httptools buffers a header until it is complete, so the bound is kept on the bytes
    received while a request's head is being read: past ``limit`` the connection gets a 431
    and is closed. A head must also be complete within ``seconds`` of its first byte (of the
    connection's opening, for the first): past that the connection gets a 408 and is closed,
    as uvicorn sets no such timer and an idle or trickling connection would hold its socket
    for ever. Likewise a body must be complete within ``body_seconds`` of its head, or the
    connection is closed: a body the app never reads (its answer went out first: a 401, a
    GET with a body) would otherwise keep the connection, as any byte cancels uvicorn's
    keep-alive timer. A body still awaited by the app then gets a 408 (``REQUEST_TIMEOUT``)
    first: timed here, per connection, the body costs no timer per message read. Without
    httptools, uvicorn's h11 protocol bounds head sizes itself.
    """
    try:
        # lazy: optional: httptools may be absent (then uvicorn's h11 bounds heads)
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        return "h11"

    class BoundedHeads(HttpToolsProtocol):
        head_bytes = 0
        in_head = True
        timers: dict[str, asyncio.TimerHandle]  # "head", "body": what is being waited for

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.timers = {}
            self._start("head", seconds, self._head_too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop("head", "body")
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.in_head:
                if self.head_bytes == 0 and "head" not in self.timers:
                    # the next request's head starts on a kept-alive connection
                    self._start("head", seconds, self._head_too_slow)
                end = data.find(b"\r\n\r\n")  # a body sent with the head is not head
                self.head_bytes += len(data) if end < 0 else end + 4
                if self.head_bytes > limit:
                    self._refuse(431, f"request head larger than {limit} bytes".encode())
                    return
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self.in_head = False
            self._stop("head")
            super().on_headers_complete()
            if not self.parser.should_upgrade():
                self._start("body", body_seconds, self._body_too_slow)

        def on_message_complete(self) -> None:
            self._stop("body")
            super().on_message_complete()
            self.in_head, self.head_bytes = True, 0

        def handle_websocket_upgrade(self) -> None:
            self._stop("body")  # the connection is the WebSocket's now
            super().handle_websocket_upgrade()

        def _start(self, name: str, delay: float, callback: Callable[[], None]) -> None:
            self._stop(name)
            self.timers[name] = self.loop.call_later(delay, callback)

        def _stop(self, *names: str) -> None:
            for name in names:
                timer = self.timers.pop(name, None)
                if timer is not None:
                    timer.cancel()

        def _body_too_slow(self) -> None:
            self.timers.pop("body", None)
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is None or cycle.response_started:  # its answer went before its body
                self.transport.close()
                return
            cycle.response_started = True  # the app, still waiting for it, writes nothing more
            message = f"request body not sent within {body_seconds:g} s"
            error = {"message": message, "extensions": {"code": "REQUEST_TIMEOUT"}}
            # the app's receive() then answers a disconnect
            self._refuse(408, json.dumps({"errors": [error]}).encode(), "application/json")

        def _head_too_slow(self) -> None:
            self.timers.pop("head", None)
            if self.in_head and not self.transport.is_closing():
                self._refuse(408, f"request head not sent within {seconds:g} s".encode())

        def _refuse(
            self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8"
        ) -> None:
            """Answer ``status`` with ``body`` and close, before (or instead of) the app."""
            self._stop("head", "body")
            self.transport.write(
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
                + f"content-type: {kind}\r\n".encode()
                + b"content-length: "
                + str(len(body)).encode()
                + b"\r\n"
                b"connection: close\r\n\r\n" + body
            )
            self.transport.close()

    return BoundedHeads


# The page of ``/`` (and of a browser's GET of ``/graphql``): package data, works offline.
