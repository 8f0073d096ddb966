"""The ASGI pieces in front of the HTTP door, outermost first: tracing of each request,
the tarpit of clients refused again and again, the token check, admission (a slot of the
gateway, or 503 / 429 with ``Retry-After``), the body limit; and the static files that refuse
dotfiles. Each decides before the body is read or parsed."""

from __future__ import annotations

import asyncio
import math
import os
import time

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshflow.errors import OverloadedError, UnauthenticatedError
from meshflow.gateway.rest import coded, error_response
from meshflow.gateway.server import Gateway
from meshflow.gateway.tarpit import HELD, Tarpit
from meshflow.wire import TIMEOUT_HEADER


class TraceRequests:
    """A server span per HTTP request to the GraphQL door, continuing the caller's
    ``traceparent`` when it sends one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tracer = trace.get_tracer("meshflow.gateway")  # ~8 us each time it is asked for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/health", "/metrics"):
            await self.app(scope, receive, send)
            return

        carrier = {
            bytes(k).decode("latin-1"): bytes(v).decode("latin-1")
            for k, v in scope.get("headers", ())
        }
        tracer = self.tracer
        name = f"{scope['method']} {scope['path']}"
        attributes = {"http.request.method": scope["method"], "url.path": scope["path"]}
        with tracer.start_as_current_span(
            name, context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            code = [0]

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    code[0] = message["status"]
                await send(message)

            await self.app(scope, receive, sending)
            span.set_attribute("http.response.status_code", code[0])
            if code[0] >= 500:
                span.set_status(Status(StatusCode.ERROR))


def wants_page(scope: Scope) -> bool:
    """A browser's GET of the GraphQL URL, no query in it: it gets the page (no token
    needed: the page holds no data)."""
    return (
        scope["method"] == "GET"
        and b"query=" not in scope.get("query_string", b"")
        and "text/html" in (header(scope, b"accept") or "")
    )


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class AuthGate:
    """Refuses HTTP requests to the protected paths without a valid token (401 with
    ``WWW-Authenticate``) before reading their body; passes the identity on in the scope."""

    def __init__(self, app: ASGIApp, gateway: Gateway, protected: tuple[str, ...]) -> None:
        self.app = app
        self.gateway = gateway
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.protected and not wants_page(scope):
            try:
                identity = await self.gateway.identify(header(scope, b"authorization"), "http")
            except UnauthenticatedError as exc:
                await error_response(exc)(scope, receive, send)
                return
            scope.setdefault("state", {})["meshflow_identity"] = identity
        await self.app(scope, receive, send)


class AdmissionGate:
    """Takes a slot of the gateway's admission for each request to ``paths`` and holds it
    until the answer is sent; a refused request is answered at once (503, or 429 for a
    caller's share, with ``Retry-After`` and the code in the body), its body never parsed.

    With ``early=True`` it takes no slot: it answers the refusal that taking one would get
    right now, before the body is read, and lets the others on. The app's stack runs it so
    in front of :class:`BodyLimit`, and again behind it to take the slot: an overloaded
    gateway reads no body, and a slow sender holds no slot while its body trickles in.
    """

    def __init__(
        self, app: ASGIApp, gateway: Gateway, paths: tuple[str, ...], *, early: bool = False
    ) -> None:
        self.app = app
        self.gateway = gateway
        self.paths = paths
        self.early = early

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or wants_page(scope):
            await self.app(scope, receive, send)
            return
        identity = scope.get("state", {}).get("meshflow_identity")
        door = "http" if scope["path"] == "/post" else "graphql"
        if self.early:
            refusal = self.gateway.refusal_now(identity, _deadline(scope), door)
            if refusal is not None:
                response = error_response(refusal)
                response.headers["connection"] = "close"  # its body is not read
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        try:
            ticket = await self.gateway.admit(identity, _deadline(scope), door)
        except OverloadedError as exc:
            await error_response(exc)(scope, receive, send)
            return
        with self.gateway.holding(ticket):
            await self.app(scope, receive, send)


_TIMEOUT = TIMEOUT_HEADER.encode()


def _deadline(scope: Scope) -> float | None:
    value = header(scope, _TIMEOUT)
    if value is None or not value.isdigit() or len(value) > 9:
        return None
    return time.monotonic() + int(value) / 1000


class TarpitGate:
    """Holds the HTTP requests to ``path`` of a client whose queries were refused too often
    (see :class:`Tarpit`) before their body is read, or answers 429 with ``Retry-After``."""

    def __init__(self, app: ASGIApp, tarpit: Tarpit, path: str) -> None:
        self.app = app
        self.tarpit = tarpit
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path:
            client = scope.get("client")
            wait = self.tarpit.admit(client[0] if client else None)
            if wait is None:
                response = coded(
                    429,
                    "too many of this client's queries were refused: retry later",
                    "TOO_MANY_REFUSALS",
                )
                response.headers["Retry-After"] = str(math.ceil(self.tarpit.max_wait))
                await response(scope, receive, send)
                return
            if wait:
                # Its turn is taken: refused, it counts no second time (the guard looks here).
                scope.setdefault("state", {})[HELD] = True
                await asyncio.sleep(wait)
        await self.app(scope, receive, send)


class BodyLimit:
    """Reads a request's body, up to ``limit`` bytes, before the app runs: a larger body
    (declared or sent chunked) is answered with 413 and never reaches the app (one slower
    than ``GraphQLLimits.max_body_seconds`` gets its 408 from the connection, timed once per
    request there: :func:`~meshflow.gateway.httpserver.bounded_http_protocol`). The bodies
    being read at once hold at most ``budget`` bytes, and those of one caller (its token's
    subject, else its address) at most ``share``: past either, a request is answered 503
    ``OVERLOADED`` (``Retry-After: 1``)."""

    def __init__(self, app: ASGIApp, limit: int, *, budget: int, share: int) -> None:
        self.app = app
        self.limit = limit
        self.budget = budget
        self.share = share
        self.reading = 0
        """Bytes of the bodies being read now, over all requests."""
        self.reading_by: dict[str, int] = {}
        """The same by caller (only callers reading a body now)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(self.limit)(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        refusal: Response | None = None
        caller = _caller(scope)
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.limit:
                    refusal = _too_large(self.limit)
                    break
                mine = self.reading_by.get(caller, 0)
                over_budget = self.reading + len(chunk) > self.budget
                if over_budget or mine + len(chunk) > self.share:
                    whose = "" if over_budget else " of this caller"
                    refusal = coded(
                        503, f"the gateway is reading too many request bodies{whose}", "OVERLOADED"
                    )
                    refusal.headers["Retry-After"] = "1"
                    break
                self.reading += len(chunk)
                self.reading_by[caller] = mine + len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        finally:
            held = sum(map(len, chunks))
            self.reading -= held
            left = self.reading_by.get(caller, 0) - held
            if left > 0:
                self.reading_by[caller] = left
            else:
                self.reading_by.pop(caller, None)
        if refusal is not None:
            del chunks
            refusal.headers["connection"] = "close"  # the rest of the body is not read
            await refusal(scope, receive, send)
            return
        body = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        del chunks

        async def replay() -> Message:
            return body.pop() if body else await receive()

        await self.app(scope, replay, send)


def _caller(scope: Scope) -> str:
    """Who sends a request, for its share of what the gateway holds: its token's subject,
    else its address."""
    identity = scope.get("state", {}).get("meshflow_identity")
    if identity is not None:
        return f"subject:{identity.subject}"
    client = scope.get("client")
    return f"address:{client[0]}" if client else "address:"


def _too_large(limit: int) -> Response:
    return coded(413, f"request body larger than {limit} bytes", "REQUEST_TOO_LARGE")


class NoDotfiles(StaticFiles):
    """Static files, without dotfiles or hidden folders (``.env``, ``.git/config``)."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        parts = path.replace("\\", "/").split("/")
        if any(part.startswith(".") and part != "." for part in parts):
            return "", None
        return super().lookup_path(path)
