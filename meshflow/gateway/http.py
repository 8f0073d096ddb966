"""The HTTP door of the gateway: GraphQL (queries, mutations), ``POST /post`` for curl users
(``gateway/rest.py``), and an offline query page (``gateway/graphiql.html``), served by uvicorn
in the gateway's event loop, behind the ASGI pieces of ``gateway/middleware.py``.

Guards, each configurable and each answered with an error carrying ``extensions.code``:
request body size (413, ``REQUEST_TOO_LARGE``), query depth (``DEPTH_LIMIT_EXCEEDED``),
aliases (``ALIAS_LIMIT_EXCEEDED``), operation tokens (``TOKEN_LIMIT_EXCEEDED``) and documents
per request (``TOO_MANY_DOCUMENTS``). Malformed JSON gets a 400 with a message.

Persisted operations (Apollo's automatic persisted queries, or a safelist): the guard resolves
``extensions.persistedQuery`` before parsing (``gateway/persisted.py``), over POST, GET and
WebSocket ``subscribe`` messages; a GET answer to a persisted query gets the configured
``Cache-Control`` (``no-store`` when refused).

``/graphql`` answers in ``application/graphql-response+json`` when the client's ``Accept``
prefers it (a request refused before execution: 4xx, no ``data``), else in
``application/json`` (200 for every GraphQL answer): ``gateway/negotiation.py``.

With JWT auth on, ``/graphql`` and ``/post`` need ``Authorization: Bearer <token>``: a missing
or refused token gets a 401 with ``WWW-Authenticate: Bearer`` before the body is read, a
missing scope a ``FORBIDDEN`` error (403 on ``/post`` and in graphql-response+json). A
WebSocket carries the token in its ``connection_init`` payload (``{"authorization": "Bearer
..."}``); it is closed with 4401 for a refused token and 4403 for a missing scope. ``/``,
``/health`` need none.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from http import HTTPStatus
from importlib import resources
from typing import Any

import strawberry
from cross_web import HTTPException  # what Strawberry's views raise for a bad request
from graphql import GraphQLError, VariableDefinitionNode
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.config import StrawberryConfig
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    Message as WSMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from meshflow.errors import BadRequestError, ForbiddenError, RequestError, UnauthenticatedError
from meshflow.gateway.answers import AnswerExecutionContext, encode_answer
from meshflow.gateway.compiled import Fallback, PlanCache, run_plan
from meshflow.gateway.discovery import EndpointCatalog
from meshflow.gateway.doctypes import TypedDocuments
from meshflow.gateway.federation import FederatedSchema
from meshflow.gateway.graphql import (
    RAN,
    SCALARS,
    Mutation,
    Query,
    Subscription,
    request_error,
)
from meshflow.gateway.guards import QueryCache, QueryGuard
from meshflow.gateway.middleware import (
    AdmissionGate,
    AuthGate,
    BodyLimit,
    NoDotfiles,
    TarpitGate,
    TraceRequests,
    header,
    wants_page,
)
from meshflow.gateway.negotiation import (
    GRAPHQL_RESPONSE,
    GRAPHQL_RESPONSE_CONTENT_TYPE,
    is_request_error,
    negotiate,
    request_error_status,
)
from meshflow.gateway.persisted import PersistedOperations
from meshflow.gateway.rest import coded, decode_json, post_route
from meshflow.gateway.server import Gateway
from meshflow.gateway.tarpit import Tarpit
from meshflow.gateway.typed import TypeRegistry, schema_key, typed_schema_types
from meshflow.observability.tracing import current_trace_id
from meshflow.proto.v1 import services_pb2
from meshflow.spec.federation import Federation
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import PersistedQueries


def error_code(has_path: bool) -> str:
    """The ``extensions.code`` of an error that came without one: the guards code every
    refusal before execution, so what is left failed in a resolver or in validation."""
    return RequestError.graphql_code if has_path else "GRAPHQL_VALIDATION_FAILED"


class _Schema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        """Log only unexpected errors: a refused token, a bad input or an executor failure
        (errors meshflow raised with a code) is the caller's answer, not a gateway fault."""
        for error in errors:
            if _uncoded(error) and _names_variable(error):  # its variables did not coerce
                error.extensions = {
                    **(error.extensions or {}),
                    "code": BadRequestError.graphql_code,
                }
        unexpected = [e for e in errors if _uncoded(e)]
        if unexpected:
            super().process_errors(unexpected, execution_context)
        for error in unexpected:  # a bug of the gateway: still a coded answer
            error.extensions = {**(error.extensions or {}), "code": RequestError.graphql_code}

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        """As Strawberry's, with the guard's refusals before parsing (a refused query text, a
        client held back) answered as errors: over WebSockets Strawberry would end the
        operation without a word."""
        return _refusals_answered(await super().stream(*args, **kwargs))


def _uncoded(error: GraphQLError) -> bool:
    return not (error.extensions and "code" in error.extensions)


def _names_variable(error: GraphQLError) -> bool:
    """graphql-core's error for a variable value that does not coerce (or a required one
    missing) points at the variable's definition: a bad input, found before execution."""
    nodes = error.nodes or []
    return error.path is None and bool(nodes) and isinstance(nodes[0], VariableDefinitionNode)


async def _refusals_answered(source: Any) -> AsyncIterator[Any]:
    try:
        async with contextlib.aclosing(source):
            async for result in source:
                yield result
    except GraphQLError as error:
        yield PreExecutionError(data=None, errors=[error])


def _close_span(result: ExecutionResult, response: GraphQLHTTPResponse) -> None:
    """The request's span gets the first error; the answer gets the trace id."""

    if result.errors:
        code = (result.errors[0].extensions or {}).get("code", "")
        trace.get_current_span().set_status(
            Status(StatusCode.ERROR, f"{code}: {result.errors[0].message}")
        )
    trace_id = current_trace_id()
    if trace_id:
        response["extensions"] = {**(response.get("extensions") or {}), "traceId": trace_id}


def make_schema(
    limits: GraphQLLimits,
    query: type = Query,
    tarpit: Tarpit | None = None,
    persisted: PersistedOperations | None = None,
    *,
    mutation: type = Mutation,
    registry: TypeRegistry | None = None,
    federation: Federation | None = None,
) -> strawberry.Schema:
    # The guard parses, measures and validates each distinct query text once (cached), before
    # any resolver runs; one cache per schema, as validation depends on the schema. The
    # persisted operations outlive a schema: a registered text is validated again anyway.
    extensions: list[Any] = [
        functools.partial(
            QueryGuard,
            limits=limits,
            cache=QueryCache(),
            authorize=_authorize_endpoints,
            tarpit=tarpit,
            persisted=persisted,
        )
    ]
    types = list(registry.objects.values()) if registry is not None else []
    common: dict[str, Any] = {
        "query": query,
        "mutation": mutation,
        "subscription": Subscription,
        "extensions": extensions,
        "types": types,
        "config": StrawberryConfig(scalar_map=SCALARS),
        "execution_context_class": AnswerExecutionContext,  # Documents by projection
    }
    if federation is not None and federation.enabled:  # typed documents: gateway/typed.py
        return _FederatedSchema(**common, entities=federation.entities, registry=registry)
    return _Schema(**common)


class _FederatedSchema(_Schema, FederatedSchema):
    """The gateway's schema as an Apollo Federation 2 subgraph (``gateway/federation.py``)."""


def typed_schema(
    limits: GraphQLLimits,
    key: tuple[dict[str, dict[str, services_pb2.Parameter]], TypedDocuments],
    tarpit: Tarpit | None = None,
    persisted: PersistedOperations | None = None,
    federation: Federation | None = None,
) -> strawberry.Schema:
    """The schema for the endpoints of :func:`~meshflow.gateway.typed.schema_key`: query
    fields for read-only endpoints, named types and fields for typed ones."""
    entities = federation.entities if federation is not None and federation.enabled else {}
    query, mutation, registry = typed_schema_types(*key, entities=entities)
    return make_schema(
        limits,
        query,
        tarpit,
        persisted,
        mutation=mutation,
        registry=registry,
        federation=federation,
    )


def _authorize_endpoints(context: Any, endpoints: list[str]) -> GraphQLError | None:
    """The FORBIDDEN error for a caller lacking the scope of one of ``endpoints``."""
    gateway = context.get("gateway") if isinstance(context, dict) else None
    if gateway is None or gateway.auth is None:
        return None
    for endpoint in endpoints:
        try:
            gateway.authorize(context.get("identity"), endpoint, context.get("door", ""))
        except RequestError as exc:
            return request_error(exc)
    return None


def _permits_endpoints(context: Any, endpoints: list[str]) -> bool:
    """Whether :func:`_authorize_endpoints` would let the caller through (nothing logged)."""
    gateway = context.get("gateway") if isinstance(context, dict) else None
    if gateway is None or gateway.auth is None:
        return True
    identity = context.get("identity")
    return all(gateway.auth.permits(identity, endpoint) for endpoint in endpoints)


# An operation refused for its token or its scope closes the socket with 4000 + the HTTP
# status of its error (4401, 4403), and that status's phrase.
_WS_CLOSE = {
    cls.graphql_code: (4000 + cls.http_status, HTTPStatus(cls.http_status).phrase)
    for cls in (UnauthenticatedError, ForbiddenError)
}


class _TransportWS(BaseGraphQLTransportWSHandler[dict[str, Any], None]):
    """graphql-transport-ws with the token checked at ``connection_init``, and the socket
    closed (4401 / 4403) when an operation on it is refused."""

    async def handle_message(self, message: Any) -> None:
        """A message of the protocol's shape goes on; anything else (not an object, an ``id``
        that is not a string, a ``subscribe`` without a query text) closes the socket with
        4400, as the protocol says, before Strawberry reads it."""
        problem = _ws_message_problem(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        gateway: Gateway = self.context["gateway"]
        if gateway.auth is not None and not self.connection_init_received:
            payload = message.get("payload")
            token = _ws_token(payload) if isinstance(payload, dict) else None
            if token is None:  # a non-browser client may have sent the header instead
                token = header(self.context["request"].scope, b"authorization")
            try:
                self.context["identity"] = await gateway.identify(token, "websocket")
            except UnauthenticatedError as exc:
                code, phrase = _WS_CLOSE[exc.graphql_code]
                await self.websocket.close(code=code, reason=_reason(phrase, exc))
                return
        await super().handle_connection_init(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        """A ``subscribe`` whose payload names its operation by ``extensions.persistedQuery``
        runs the text of that hash (Strawberry passes no extensions on): the same lookups
        and refusals as over HTTP, answered as an ``error`` message. A WebSocket does not
        register texts (register over HTTP); the safelist also holds for plain texts, in
        the guard."""
        payload: Any = message.get("payload")
        persisted = self.view.persisted if isinstance(self.view, _GraphQLApp) else None
        extensions = payload.get("extensions") if isinstance(payload, dict) else None
        if persisted is not None and isinstance(extensions, dict) and extensions:
            try:
                resolved = persisted.resolve(payload.get("query"), extensions)
            except GraphQLError as refusal:
                if self.connection_acknowledged:
                    error: WSMessage = {
                        "id": message["id"],
                        "type": "error",
                        "payload": [refusal.formatted],
                    }
                    await self.send_message(error)
                    return
            else:
                payload = {**payload, "query": resolved.query}
                message = SubscribeMessage(id=message["id"], type="subscribe", payload=payload)
        await super().handle_subscribe(message)

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


_WS_OPTIONAL = {"variables": dict, "operationName": str, "extensions": dict}


def _ws_message_problem(message: Any) -> str | None:
    """Why a graphql-transport-ws message is malformed, or None."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return "a message must be a JSON object with a string 'type'"
    kind = message["type"]
    if kind in ("subscribe", "complete", "next", "error") and not isinstance(
        message.get("id"), str
    ):
        return f"a '{kind}' message needs a string 'id'"
    if kind == "subscribe":
        payload = message.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("query", ""), str):
            return "a 'subscribe' payload must be an object with a string 'query'"
        for key, kind_of in _WS_OPTIONAL.items():
            if payload.get(key) is not None and not isinstance(payload[key], kind_of):
                return f"a 'subscribe' payload's '{key}' must be a {kind_of.__name__}"
    return None


def _ws_token(payload: dict[str, Any]) -> str | None:
    for key in ("authorization", "Authorization", "token"):
        value = payload.get(key)
        if isinstance(value, str):
            return value
    return None


def _reason(prefix: str, exc: Exception) -> str:
    return f"{prefix}: {exc}"[:120]  # a close reason holds at most 123 bytes


class _GraphQLApp(GraphQL[dict[str, Any], None]):
    graphql_transport_ws_handler_class = _TransportWS

    def __init__(
        self,
        schema: strawberry.Schema,
        gateway: Gateway,
        limits: GraphQLLimits,
        allowed_origins: tuple[str, ...] = (),
        tarpit: Tarpit | None = None,
        persisted: PersistedOperations | None = None,
        federation: Federation | None = None,
    ) -> None:
        # graphql-transport-ws only: the legacy graphql-ws protocol has no auth step.
        # A browser page on another origin may open a WebSocket only when CORS allows it.
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            allowed_origins=allowed_origins,
            max_subscriptions_per_connection=16,
            connection_init_wait_timeout=timedelta(seconds=limits.max_head_seconds),
        )
        self.gateway = gateway
        self.limits = limits
        self.tarpit = tarpit
        self.persisted = persisted
        self.federation = federation
        self._fields: Any = ({}, TypedDocuments())
        self._plans = PlanCache(schema)  # compiled operations (gateway/compiled.py)
        self.catalog = EndpointCatalog(
            gateway.traversal.topology, gateway.traversal.transport, self._new_endpoints
        )

    def _new_endpoints(self, answers: list[services_pb2.EndpointsResponse]) -> None:
        """Read-only endpoints become query fields, typed endpoints typed fields, as soon as
        their executors tell of them."""
        key = schema_key(answers)
        if key != self._fields:
            self._fields = key
            self.schema = typed_schema(
                self.limits, key, self.tarpit, self.persisted, self.federation
            )

    async def execute_single(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        if self.federation is not None and self.federation.enabled:
            # a router reads `_service { sdl }` once: it must see every deployment's types
            await self.catalog.refresh_missing()
        data: GraphQLRequestData | None = kwargs.get("request_data")
        query = self._compiled_text(data, kwargs.get("request_adapter"))
        if query is not None and data is not None:
            if self._plans.schema is not self.schema:
                self._plans = PlanCache(self.schema)
            plan = self._plans.get(query, data.operation_name)
            if plan is not None:
                try:
                    answer = await run_plan(
                        plan,
                        self._plans.graphql_schema,
                        data.variables,
                        kwargs["context"],
                        self.limits,
                        _permits_endpoints,
                    )
                    return ExecutionResult(data=answer, errors=None)
                except Fallback as back:
                    if back.ran is not None:  # the resolver completes what already ran
                        kwargs["context"] = {**kwargs["context"], RAN: back.ran}
                    query = None
        result = await super().execute_single(*args, **kwargs)
        if query is not None and data is not None and not result.errors:
            self._plans.learn(query, data.operation_name)
        if not self.catalog.complete and _names_unknown_field(result):
            # A field of a deployment that has not answered yet: ask it once before
            # refusing (nothing ran, validation failed).
            schema = self.schema
            await self.catalog.refresh_missing()
            if self.schema is not schema:
                result = await super().execute_single(*args, **kwargs)
        return result

    def _compiled_text(self, data: GraphQLRequestData | None, adapter: Any) -> str | None:
        """The text a request runs, when it may run compiled (``gateway/compiled.py``): sent
        with POST and a string or no ``operationName``, with its own text or the known text
        of a persisted operation (nothing to register)."""
        if data is None or getattr(adapter, "method", None) != "POST":
            return None  # GET runs no mutation
        if not isinstance(data.operation_name, str | None):
            return None  # Strawberry refuses it
        query = data.query if isinstance(data.query, str) else None
        extensions = data.extensions
        if not extensions:
            return query
        if self.persisted is None or not isinstance(extensions, dict):
            return None
        if set(extensions) != {"persistedQuery"}:
            return None
        try:  # what the guard resolves, without its side effects (they come with refusals)
            resolved = self.persisted.resolve(query, extensions)
        except GraphQLError:
            return None
        return resolved.query if resolved.register is None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if wants_page(scope) and b"extensions=" not in scope.get("query_string", b""):
            # a browser opening the URL meshflow printed: the page of /
            await HTMLResponse(_GRAPHIQL)(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        # The media type of the answer, from Accept (see gateway/negotiation.py); the status
        # of a request error in application/graphql-response+json is set by process_result.
        media = request.state.graphql_media = negotiate(header(scope, b"accept"))
        try:
            response = await self.run(request)
        except HTTPException as exc:  # Strawberry's refusals, as coded JSON errors
            code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST")
            response = coded(exc.status_code, exc.reason, code)
        if media == GRAPHQL_RESPONSE:
            response.headers["content-type"] = GRAPHQL_RESPONSE_CONTENT_TYPE
            status = getattr(request.state, "graphql_status", None)
            if status is not None:
                response.status_code = status
        response.headers.add_vary_header("accept")
        if scope["method"] == "GET" and getattr(request.state, "meshflow_persisted", False):
            self._cache_control(request, response)
        await response(scope, receive, send)

    def _cache_control(self, request: Request, response: Response) -> None:
        """A persisted query's GET answer: cacheable as configured when it succeeded, never
        when refused (a cached refusal would outlive the registration that fixes it)."""
        failed = response.status_code != 200 or getattr(request.state, "graphql_errors", True)
        if failed:
            response.headers["cache-control"] = "no-store"
        elif self.persisted is not None and self.persisted.options.cache_control:
            response.headers["cache-control"] = self.persisted.options.cache_control

    def should_render_graphql_ide(self, request: Any) -> bool:
        return False  # browsers get the page in __call__; a GET by hash has no query

    def parse_json(self, data: str | bytes) -> Any:
        """An HTTP body or the ``variables`` of a GET: a JSON object, or a 400."""
        try:
            value = self.decode_json(data)
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"the body is not valid JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise HTTPException(
                400, 'the body must be a JSON object with "query" and optionally "variables"'
            )
        return value

    def decode_json(self, data: str | bytes) -> object:
        """JSON from the network: UTF-8 only, nesting bounded (WebSocket messages too)."""
        return decode_json(data)

    def encode_json(self, data: object) -> str:
        """WebSocket messages (text frames: a str) with orjson (``gateway/answers.py``)."""
        return encode_answer(data).decode()

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Any
    ) -> Response:
        """An HTTP answer: its orjson bytes as they are (Strawberry's, without a str between)."""
        response = Response(encode_answer(response_data), media_type="application/json")
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        if sub_response.status_code:
            response.status_code = sub_response.status_code
        return response

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        # The first GraphQL request starts the background refresh (never waits on it): by
        # then the executors serve. Asking earlier would find no socket, and gRPC would put
        # the channel in reconnect back-off, failing the Flow's first requests.
        self.catalog.start()
        return {
            "gateway": self.gateway,
            "max_docs": self.limits.max_docs,
            "max_answer_bytes": self.limits.max_answer_bytes,
            "request": request,
            "response": response,
            "identity": request.scope.get("state", {}).get("meshflow_identity"),
            "door": "websocket" if request.scope["type"] == "websocket" else "graphql",
        }

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        """Every error gets an ``extensions.code`` (parse and validation errors have none)."""
        for error in result.errors or ():
            if not (error.extensions and "code" in error.extensions):
                code = error_code(bool(error.path))
                error.extensions = {**(error.extensions or {}), "code": code}
        response = await super().process_result(request, result)
        request.state.graphql_errors = bool(result.errors)
        media = getattr(request.state, "graphql_media", None)
        if media == GRAPHQL_RESPONSE and is_request_error(result):
            # Not executed: a 4xx and no data entry, so that a client (and any proxy on the
            # way) can trust the status. application/json keeps 200 and "data": null.
            request.state.graphql_status = request_error_status(result.errors or ())
            response.pop("data", None)
        if self.gateway.tracing:
            _close_span(result, response)
        return response


def _names_unknown_field(result: ExecutionResult) -> bool:
    return any(e.message.startswith("Cannot query field") for e in result.errors or ())


_ADMITTED = ("/graphql", "/post")
"""The paths whose requests take a slot of the gateway's admission before their body is read."""

_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE"}


def make_app(
    gateway: Gateway,
    limits: GraphQLLimits,
    static: Mapping[str, str] | None = None,
    cors: tuple[str, ...] = (),
    persisted: PersistedQueries | None = None,
    federation: Federation | None = None,
) -> ASGIApp:
    """The ASGI app of the HTTP door; ``static`` mounts folders of files (no token needed,
    no dotfiles); ``cors`` lists the origins whose pages may call it (none by default);
    ``persisted``: automatic persisted queries by default (ConfigError for a bad manifest)."""
    tarpit = Tarpit(rate=limits.refusals_per_second, burst=limits.refusal_burst)
    operations = PersistedOperations(persisted or PersistedQueries(), limits)
    graphql_app = _GraphQLApp(
        typed_schema(limits, ({}, TypedDocuments()), tarpit, operations, federation),
        gateway,
        limits,
        allowed_origins=cors,
        tarpit=tarpit,
        persisted=operations,
        federation=federation,
    )

    async def ide(request: Request) -> Response:
        return HTMLResponse(_GRAPHIQL)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "SERVING"})

    async def metrics(request: Request) -> Response:
        if gateway.metrics is None:
            return coded(404, "metrics are off: Flow(metrics=True) serves them", "NOT_FOUND")
        # lazy: prometheus_client only where metrics are on (it is, once here)
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/", ide, methods=["GET"]),
            Route("/post", post_route(gateway, limits), methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql_app),
            *(
                Mount(prefix, NoDotfiles(directory=folder, html=True))
                for prefix, folder in (static or {}).items()
            ),
        ]
    )
    # The body is read (up to its size and time limits) only after the token is checked, and
    # before the request takes an admission slot: a slow sender must not hold one. An
    # overloaded gateway refuses before reading the body all the same (early).
    outer: ASGIApp = AdmissionGate(
        BodyLimit(
            AdmissionGate(app, gateway, _ADMITTED),
            limits.max_body_bytes,
            budget=4 * limits.max_body_bytes,
            share=2 * limits.max_body_bytes,
        ),
        gateway,
        _ADMITTED,
        early=True,
    )
    if gateway.auth is not None:
        outer = AuthGate(outer, gateway, ("/graphql", "/post"))
    outer = TarpitGate(outer, tarpit, "/graphql")
    if cors:
        outer = CORSMiddleware(
            outer,
            allow_origins=list(cors),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
            max_age=600,
        )
    return TraceRequests(outer) if gateway.tracing else outer


_GRAPHIQL = resources.files("meshflow.gateway").joinpath("graphiql.html").read_text("utf-8")
