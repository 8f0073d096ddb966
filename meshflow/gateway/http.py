"""The HTTP door of the gateway: GraphQL (queries, mutations), ``POST /post`` for curl users,
and an offline GraphiQL page, served by uvicorn in the gateway's event loop.

Guards, each configurable and each answered with an error carrying ``extensions.code``:
request body size (413, ``REQUEST_TOO_LARGE``), query depth (``DEPTH_LIMIT_EXCEEDED``),
aliases (``ALIAS_LIMIT_EXCEEDED``), operation tokens (``TOKEN_LIMIT_EXCEEDED``) and documents
per request (``TOO_MANY_DOCUMENTS``). Malformed JSON gets a 400 with a message.

With JWT auth on, ``/graphql`` and ``/post`` need ``Authorization: Bearer <token>``: a missing
or refused token gets a 401 with ``WWW-Authenticate: Bearer`` before the body is read, a
missing scope a ``FORBIDDEN`` error (403 on ``/post``). A WebSocket carries the token in its
``connection_init`` payload (``{"authorization": "Bearer ..."}``); it is closed with 4401 for a
refused token and 4403 for a missing scope. ``/``, ``/health`` need none.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Mapping
from typing import Any

import strawberry
import uvicorn
from graphql import GraphQLError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    Message as WSMessage,
)
from strawberry.types import ExecutionResult

from meshflow.errors import ForbiddenError, UnauthenticatedError
from meshflow.gateway.graphql import (
    DocumentInput,
    Mutation,
    NdArrayInput,
    Query,
    Subscription,
    discover,
    query_type,
    run_post,
)
from meshflow.gateway.limits import GraphQLLimits
from meshflow.gateway.server import Gateway
from meshflow.observability.tracing import current_trace_id

_CODES = (  # first match wins: the token limit is reported as a syntax error
    ("exceeds maximum operation depth", "DEPTH_LIMIT_EXCEEDED"),
    ("aliases found", "ALIAS_LIMIT_EXCEEDED"),
    ("tokens. Parsing aborted", "TOKEN_LIMIT_EXCEEDED"),
    ("Syntax Error", "GRAPHQL_PARSE_FAILED"),
)


def error_code(message: str, has_path: bool) -> str:
    """The ``extensions.code`` of an error that came without one (parse, validation)."""
    code = next((c for text, c in _CODES if text in message), None)
    if code is None:
        code = "INTERNAL_SERVER_ERROR" if has_path else "GRAPHQL_VALIDATION_FAILED"
    return code


class _Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Log only unexpected errors: a refused token, a bad input or an executor failure
        (errors meshflow raised with a code) is the caller's answer, not a gateway fault."""
        unexpected = [e for e in errors if not (e.extensions and "code" in e.extensions)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


def _close_span(result: ExecutionResult, response: GraphQLHTTPResponse) -> None:
    """The request's span gets the first error; the answer gets the trace id."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    if result.errors:
        code = (result.errors[0].extensions or {}).get("code", "")
        trace.get_current_span().set_status(
            Status(StatusCode.ERROR, f"{code}: {result.errors[0].message}")
        )
    trace_id = current_trace_id()
    if trace_id:
        response["extensions"] = {**(response.get("extensions") or {}), "traceId": trace_id}


class TraceRequests:
    """A server span per HTTP request to the GraphQL door, continuing the caller's
    ``traceparent`` when it sends one."""

    def __init__(self, app: ASGIApp) -> None:
        from opentelemetry import trace

        self.app = app
        self.tracer = trace.get_tracer("meshflow.gateway")  # ~8 us each time it is asked for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/health", "/metrics"):
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

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


def make_schema(limits: GraphQLLimits, query: type = Query) -> strawberry.Schema:
    # One instance of each limiter for the schema's life (as Strawberry documents): the
    # validation rules then stay the same, so each distinct query is parsed and validated
    # once and served from the caches afterwards.
    extensions: list[Any] = [
        ParserCache(maxsize=512),
        ValidationCache(maxsize=512),
        QueryDepthLimiter(max_depth=limits.max_depth),
        MaxAliasesLimiter(max_alias_count=limits.max_aliases),
        MaxTokensLimiter(max_token_count=limits.max_tokens),
    ]
    return _Schema(query=query, mutation=Mutation, subscription=Subscription, extensions=extensions)


_WS_CLOSE = {"UNAUTHENTICATED": (4401, "Unauthorized"), "FORBIDDEN": (4403, "Forbidden")}


class _TransportWS(BaseGraphQLTransportWSHandler[dict[str, Any], None]):
    """graphql-transport-ws with the token checked at ``connection_init``, and the socket
    closed (4401 / 4403) when an operation on it is refused."""

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        gateway: Gateway = self.context["gateway"]
        if gateway.auth is not None and not self.connection_init_received:
            payload = message.get("payload")
            token = _ws_token(payload) if isinstance(payload, dict) else None
            if token is None:  # a non-browser client may have sent the header instead
                token = _header(self.context["request"].scope, b"authorization")
            try:
                self.context["identity"] = gateway.identify(token, "websocket")
            except UnauthenticatedError as exc:
                await self.websocket.close(code=4401, reason=_reason("Unauthorized", exc))
                return
        await super().handle_connection_init(message)

    closed = False

    async def send_message(self, message: WSMessage) -> None:
        if self.closed:  # closed after a refusal: the operation's "complete" has nowhere to go
            return
        await super().send_message(message)
        if message.get("type") not in ("next", "error"):
            return
        payload: Any = message.get("payload")
        errors = payload if isinstance(payload, list) else (payload or {}).get("errors") or ()
        for error in errors:
            close = _WS_CLOSE.get(str((error.get("extensions") or {}).get("code")))
            if close is not None:
                self.closed = True
                await self.websocket.close(
                    code=close[0], reason=f"{close[1]}: {error.get('message', '')}"[:120]
                )
                return


def _ws_token(payload: dict[str, Any]) -> str | None:
    for key in ("authorization", "Authorization", "token"):
        value = payload.get(key)
        if isinstance(value, str):
            return value
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _reason(prefix: str, exc: Exception) -> str:
    return f"{prefix}: {exc}"[:120]  # a close reason holds at most 123 bytes


class _GraphQLApp(GraphQL[dict[str, Any], None]):
    graphql_transport_ws_handler_class = _TransportWS

    def __init__(self, schema: strawberry.Schema, gateway: Gateway, limits: GraphQLLimits) -> None:
        # graphql-transport-ws only: the legacy graphql-ws protocol has no auth step.
        super().__init__(
            schema, graphql_ide=None, subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,)
        )
        self.gateway = gateway
        self.limits = limits
        self.discovered = False
        self._discovering = asyncio.Lock()
        self._last_try = 0.0

    async def discover(self) -> None:
        """Ask every deployment for its endpoints; read-only ones become query fields.

        Runs on the first request (the executors answer by then), and again later while a
        deployment stays silent.
        """
        async with self._discovering:
            now = time.monotonic()
            if self.discovered or now - self._last_try < 1.0:
                return
            self._last_try = now
            found = await discover(self.gateway)
            if found is None:
                return
            if found:
                self.schema = make_schema(self.limits, query_type(found))
            self.discovered = True

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        if not self.discovered:
            await self.discover()
        return {
            "gateway": self.gateway,
            "max_docs": self.limits.max_docs,
            "request": request,
            "response": response,
            "identity": request.scope.get("state", {}).get("meshflow_identity"),
            "door": "websocket" if request.scope["type"] == "websocket" else "graphql",
        }

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        """Every error gets an ``extensions.code`` (parse and validation errors have none)."""
        for error in result.errors or ():
            if not (error.extensions and "code" in error.extensions):
                code = error_code(error.message, bool(error.path))
                error.extensions = {**(error.extensions or {}), "code": code}
        response = await super().process_result(request, result)
        if self.gateway.tracing:
            _close_span(result, response)
        return response


class AuthGate:
    """Refuses HTTP requests to the protected paths without a valid token (401 with
    ``WWW-Authenticate``) before reading their body; passes the identity on in the scope."""

    def __init__(self, app: ASGIApp, gateway: Gateway, protected: tuple[str, ...]) -> None:
        self.app = app
        self.gateway = gateway
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.protected:
            try:
                identity = self.gateway.identify(_header(scope, b"authorization"), "http")
            except UnauthenticatedError as exc:
                await unauthorized(exc)(scope, receive, send)
                return
            scope.setdefault("state", {})["meshflow_identity"] = identity
        await self.app(scope, receive, send)


def unauthorized(exc: UnauthenticatedError) -> Response:
    challenge = 'Bearer realm="meshflow"'
    if str(exc) != "no token":
        description = str(exc).replace('"', "'").replace("\\", "")
        challenge += f', error="invalid_token", error_description="{description}"'
    response = _error(401, str(exc), "UNAUTHENTICATED")
    response.headers["WWW-Authenticate"] = challenge
    return response


def forbidden(exc: ForbiddenError) -> Response:
    response = _error(403, str(exc), "FORBIDDEN")
    challenge = 'Bearer realm="meshflow", error="insufficient_scope"'
    if exc.scope:
        challenge += f', scope="{exc.scope}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


class BodyLimit:
    """Refuses request bodies larger than ``limit`` bytes with 413 before reading them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(self.limit)(scope, receive, send)


class _TooLarge(Exception):
    pass


def _too_large(limit: int) -> Response:
    return _error(413, f"request body larger than {limit} bytes", "REQUEST_TOO_LARGE")


def _error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status
    )


def _doc_input(raw: Any, i: int) -> DocumentInput:
    if not isinstance(raw, dict):
        raise ValueError(f"docs[{i}] must be a JSON object")
    known = {
        "id",
        "parentId",
        "text",
        "blob",
        "uri",
        "mimeType",
        "tags",
        "tensor",
        "embedding",
    }
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"docs[{i}] has unknown field(s) {', '.join(sorted(unknown))}")
    arrays = {}
    for name in ("tensor", "embedding"):
        value = raw.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            value = {"data": value}
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise ValueError(
                f"docs[{i}].{name} must be a list of numbers or {{data, shape, dtype}}"
            )
        arrays[name] = NdArrayInput(
            data=value["data"], shape=value.get("shape"), dtype=value.get("dtype", "float32")
        )
    return DocumentInput(
        id=raw.get("id"),
        parent_id=raw.get("parentId"),
        text=raw.get("text"),
        blob=raw.get("blob"),
        uri=raw.get("uri"),
        mime_type=raw.get("mimeType"),
        tags=raw.get("tags"),
        **arrays,
    )


def _doc_json(doc: Any) -> dict[str, Any]:
    """A response Document as plain JSON, every field."""
    out: dict[str, Any] = {"id": doc.id()}
    for name, key in (("parent_id", "parentId"), ("text", "text"), ("uri", "uri")):
        value = getattr(doc, name)()
        if value:
            out[key] = value
    if doc._pb.mime_type:
        out["mimeType"] = doc._pb.mime_type
    if doc._pb.blob:
        out["blob"] = doc.blob()
    for name in ("tensor", "embedding"):
        array = getattr(doc, name)()
        if array is not None:
            out[name] = {"data": array.data(), "shape": array.shape(), "dtype": array.dtype()}
    if doc._pb.HasField("tags"):
        out["tags"] = doc.tags()
    if doc._pb.scores:
        out["scores"] = doc.scores()
    if doc._pb.matches:
        out["matches"] = [_doc_json(m) for m in doc.matches()]
    if doc._pb.chunks:
        out["chunks"] = [_doc_json(c) for c in doc.chunks()]
    return out


def make_app(
    gateway: Gateway, limits: GraphQLLimits, static: Mapping[str, str] | None = None
) -> ASGIApp:
    """The ASGI app of the HTTP door; ``static`` mounts folders of files (no token needed)."""
    graphql_app = _GraphQLApp(make_schema(limits), gateway, limits)

    async def post(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return _error(400, f"the body is not valid JSON: {exc}", "BAD_REQUEST")
        if not isinstance(body, dict) or not isinstance(body.get("on"), str):
            return _error(
                400,
                'the body must be a JSON object with "on" (endpoint), and optionally "docs", '
                '"parameters", "targetExecutor" and "fields"',
                "BAD_REQUEST",
            )
        docs = body.get("docs") or []
        fields = body.get("fields") or []
        if not isinstance(docs, list) or not isinstance(fields, list):
            return _error(400, '"docs" and "fields" must be lists', "BAD_REQUEST")
        try:
            inputs = [_doc_input(d, i) for i, d in enumerate(docs)]
        except ValueError as exc:
            return _error(400, str(exc), "BAD_REQUEST")
        try:
            answer = await run_post(
                gateway,
                identity=request.scope.get("state", {}).get("meshflow_identity"),
                door="http",
                on=body["on"],
                docs=inputs,
                parameters=body.get("parameters"),
                target_executor=body.get("targetExecutor"),
                fields=[str(f) for f in fields],
                max_docs=limits.max_docs,
            )
        except GraphQLError as exc:
            extensions = exc.extensions or {}
            code = extensions.get("code", "INTERNAL_SERVER_ERROR")
            if code == "FORBIDDEN":
                return forbidden(ForbiddenError(exc.message, scope=extensions.get("scope")))
            if code == "UNAUTHENTICATED":
                return unauthorized(UnauthenticatedError(exc.message))
            status = {"BAD_USER_INPUT": 400, "TOO_MANY_DOCUMENTS": 413, "OVERLOADED": 503}.get(
                code, 500 if code != "EXECUTOR_ERROR" else 502
            )
            return JSONResponse({"errors": [exc.formatted]}, status_code=status)
        return JSONResponse(
            {
                "requestId": answer.request_id,
                "docs": [_doc_json(d) for d in answer.docs],
                "results": answer.results,
            }
        )

    async def ide(request: Request) -> Response:
        return HTMLResponse(_GRAPHIQL)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "SERVING"})

    async def metrics(request: Request) -> Response:
        if gateway.metrics is None:
            return _error(404, "metrics are off: Flow(metrics=True) serves them", "NOT_FOUND")
        return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/", ide, methods=["GET"]),
            Route("/post", post, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            *(
                Mount(prefix, StaticFiles(directory=folder, html=True))
                for prefix, folder in (static or {}).items()
            ),
        ]
    )
    gated: ASGIApp = app
    if gateway.auth is not None:
        gated = AuthGate(app, gateway, ("/graphql", "/post"))
    limited: ASGIApp = BodyLimit(gated, limits.max_body_bytes)
    return TraceRequests(limited) if gateway.tracing else limited


class HttpDoor:
    """uvicorn serving :func:`make_app` on an already bound socket, in the running loop."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only for
        # listening sockets made so; without it each answer waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(
                f"the GraphQL door cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        self.port: int = self.sock.getsockname()[1]
        self.config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
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


_GRAPHIQL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshflow GraphQL</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;flex-direction:column;height:100vh}
header{padding:.5em 1em;background:#1d3557;color:#fff}
main{flex:1;display:flex;gap:.5em;padding:.5em}
section{flex:1;display:flex;flex-direction:column}
textarea,pre{flex:1;font-family:ui-monospace,monospace;font-size:13px;border:1px solid #ccc;
padding:.5em;margin:0;overflow:auto}
button{margin:.3em 0;padding:.4em 1em}
</style></head><body>
<header>meshflow GraphQL &mdash; this page works offline;
queries go to <code>/graphql</code></header>
<main><section><label for="q">Query</label>
<textarea id="q">query {
  flow { healthy deployments { name replicas shards endpoints healthy } }
}</textarea>
<label for="v">Variables (JSON)</label><textarea id="v" style="flex:.3">{}</textarea>
<label for="t">Authorization token (optional)</label><input id="t">
<button id="run">Run (Ctrl-Enter)</button></section>
<section><label for="out">Result</label><pre id="out"></pre></section></main>
<script>
async function run(){
  const out=document.getElementById('out');let variables={};
  try{variables=JSON.parse(document.getElementById('v').value||'{}')}
  catch(e){out.textContent='Variables are not valid JSON: '+e;return}
  const headers={'content-type':'application/json'};
  const token=document.getElementById('t').value.trim();
  if(token){headers['authorization']='Bearer '+token}
  const r=await fetch('graphql',{method:'POST',headers,
    body:JSON.stringify({query:document.getElementById('q').value,variables})});
  out.textContent=JSON.stringify(await r.json(),null,2);
}
document.getElementById('run').onclick=run;
document.addEventListener('keydown',e=>{if(e.ctrlKey&&e.key==='Enter'){run()}});
</script></body></html>
"""
