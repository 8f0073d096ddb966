"""The GraphQL schema of the gateway: a ``post`` mutation, a ``stream`` subscription and a
``flow`` query.

Resolvers hand one serialized DataRequest to the same traversal engine the gRPC door uses.
Document types read the answer's protobuf messages lazily, so only the fields a query selects
are ever converted; the fields selected under ``docs`` also travel in the request header, and
the last executors drop the others before replying (selection pushdown).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import keyword
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NewType, cast

import strawberry
from graphql import GraphQLError, OperationDefinitionNode
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from strawberry.scalars import JSON
from strawberry.types import Info, get_object_definition
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection

from meshflow.document.proto import results_to_dict
from meshflow.errors import BadRequestError, RequestError
from meshflow.gateway.doctypes import merge_parameters
from meshflow.gateway.fanout import fan_out
from meshflow.gateway.post import (
    answer_string,
    answer_tags,
    array_values,
    limit_answer_bytes,
    run_post,
)
from meshflow.gateway.server import Gateway
from meshflow.proto.v1 import data_request_pb2, document_pb2, services_pb2

log = logging.getLogger("meshflow.gateway")

_CAMEL = {"parentId": "parent_id", "mimeType": "mime_type"}
_PROTO_FIELDS = {
    "id",
    "parentId",
    "text",
    "blob",
    "tensor",
    "embedding",
    "uri",
    "mimeType",
    "tags",
    "scores",
    "matches",
    "chunks",
}


def graphql_error(message: str, code: str, **extra: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code, **extra})


def _floats(value: Any) -> Any:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise ValueError("Floats must be a list of numbers")
    return value


Floats = NewType("Floats", object)

SCALARS: dict[object, Any] = {
    Floats: strawberry.scalar(
        name="Floats",
        description="A list of floats, serialized as one JSON array (not value by value: an "
        "embedding is thousands of numbers).",
        serialize=lambda value: value,
        parse_value=_floats,
    )
}
"""Custom scalars, for the schema's ``StrawberryConfig(scalar_map=...)``."""


@strawberry.type(name="NdArray", description="An array: its shape, dtype and values.")
class NdArrayType:
    _pb: strawberry.Private[document_pb2.NdArray]

    @strawberry.field
    def shape(self) -> list[int]:
        return list(self._pb.shape)

    @strawberry.field(description="numpy dtype string, e.g. '<f4'")
    def dtype(self) -> str:
        return self._pb.dtype

    @strawberry.field(description="All values in C order, as floats.")
    def data(self) -> Floats:
        return Floats(array_values(self._pb))


@strawberry.type(name="Document")
class DocumentType:
    _pb: strawberry.Private[document_pb2.Document]

    @strawberry.field
    def id(self) -> str:
        return answer_string(self._pb.id)

    @strawberry.field
    def parent_id(self) -> str:
        return answer_string(self._pb.parent_id)

    @strawberry.field
    def text(self) -> str:
        return answer_string(self._pb.text)

    @strawberry.field(description="Raw bytes, base64-encoded.")
    def blob(self) -> str:
        return answer_string(base64.b64encode(self._pb.blob).decode("ascii"))

    @strawberry.field
    def uri(self) -> str:
        return answer_string(self._pb.uri)

    @strawberry.field
    def mime_type(self) -> str:
        return answer_string(self._pb.mime_type)

    @strawberry.field
    def tensor(self) -> NdArrayType | None:
        return NdArrayType(_pb=self._pb.tensor) if self._pb.HasField("tensor") else None

    @strawberry.field
    def embedding(self) -> NdArrayType | None:
        return NdArrayType(_pb=self._pb.embedding) if self._pb.HasField("embedding") else None

    @strawberry.field
    def tags(self) -> JSON:
        return cast(JSON, answer_tags(self._pb))

    @strawberry.field
    def scores(self) -> JSON:
        return cast(JSON, dict(self._pb.scores))

    @strawberry.field
    def matches(self) -> list[DocumentType]:
        return [DocumentType(_pb=m) for m in self._pb.matches]

    @strawberry.field
    def chunks(self) -> list[DocumentType]:
        return [DocumentType(_pb=c) for c in self._pb.chunks]


@strawberry.type(name="Response")
class ResponseType:
    request_id: str
    docs: list[DocumentType]
    results: JSON = strawberry.field(description="Dicts returned by executors, by executor.")
    batch: int | None = strawberry.field(
        default=None, description="In a stream: the position of the batch this answers."
    )


@strawberry.input(description="An array: values in C order, with shape and dtype.")
class NdArrayInput:
    data: list[float]
    shape: list[int] | None = None
    dtype: str = "float32"


@strawberry.input
class DocumentInput:
    id: str | None = None
    parent_id: str | None = None
    text: str | None = None
    blob: str | None = strawberry.field(default=None, description="base64")
    uri: str | None = None
    mime_type: str | None = None
    tags: JSON | None = None
    tensor: NdArrayInput | None = None
    embedding: NdArrayInput | None = None


def document_input(cls: type, value: Mapping[str, Any], context: Any) -> Any:
    """A ``DocumentInput`` from its GraphQL value, which graphql-core has already coerced
    (every field checked, defaults filled in): the same instance as Strawberry's generic
    conversion builds, without resolving each field's type again for each document."""
    return cls(
        id=value.get("id"),
        parent_id=value.get("parentId"),
        text=value.get("text"),
        blob=value.get("blob"),
        uri=value.get("uri"),
        mime_type=value.get("mimeType"),
        tags=value.get("tags"),
        tensor=_array_input(value.get("tensor")),
        embedding=_array_input(value.get("embedding")),
    )


def _array_input(value: Mapping[str, Any] | None) -> NdArrayInput | None:
    if value is None:
        return None
    shape = value.get("shape")
    return NdArrayInput(
        data=list(value["data"]),  # copied, as Strawberry does for a list argument
        shape=None if shape is None else list(shape),
        dtype=value.get("dtype", "float32"),
    )


get_object_definition(DocumentInput, strict=True).from_input = document_input


@strawberry.type(description="A hub executor (uses: hub://...): which version, which environment.")
class HubExecutorInfo:
    name: str
    version: str
    environment: str


@strawberry.type
class DeploymentInfo:
    name: str
    needs: list[str]
    shards: int
    replicas: int
    polling: JSON
    endpoints: list[str]
    healthy: bool
    hub: HubExecutorInfo | None = None


@strawberry.type
class Edge:
    source: str
    target: str


@strawberry.type
class FlowInfo:
    deployments: list[DeploymentInfo]
    edges: list[Edge]
    healthy: bool


def _gateway(info: Info[Any, Any]) -> Gateway:
    gateway: Gateway = info.context["gateway"]
    return gateway


def request_error(exc: RequestError) -> GraphQLError:
    """The GraphQL error for a refused or failed request: its code and the fields its class
    adds (the executor that failed, the missing scope)."""
    return GraphQLError(str(exc), extensions=exc.extensions())


def _caller(info: Info[Any, Any]) -> dict[str, Any]:
    """The identity and door of the request an operation belongs to."""
    if _gateway(info).tracing:
        _name_span(info)
    return {"identity": info.context.get("identity"), "door": info.context.get("door", "")}


def _name_span(info: Info[Any, Any]) -> None:
    name_operation_span(info.operation, info.field_name)


def name_operation_span(operation: OperationDefinitionNode, field_name: str) -> None:
    """Name the request's span after its GraphQL operation (``graphql mutation post``)."""

    span = trace.get_current_span()
    if span.is_recording():
        kind = operation.operation.value
        name = operation.name.value if operation.name else field_name
        span.update_name(f"graphql {kind} {name}")
        span.set_attribute("graphql.operation.type", kind)
        span.set_attribute("graphql.operation.name", name)


def _require(info: Info[Any, Any], scope: str | None, what: str) -> None:
    auth = _gateway(info).auth
    if auth is None:
        return
    try:
        auth.require(info.context.get("identity"), scope, what=what, door=_caller(info)["door"])
    except RequestError as exc:
        raise request_error(exc) from None


def wanted_fields(selections: Iterable[Selection], prefix: str = "") -> set[str]:
    """Document field paths selected under ``docs`` ("id", "matches", "matches.scores")."""
    out: set[str] = set()
    for sel in selections:
        if isinstance(sel, FragmentSpread | InlineFragment):
            out |= wanted_fields(sel.selections, prefix)
        elif isinstance(sel, SelectedField) and sel.name in _PROTO_FIELDS:
            name = _CAMEL.get(sel.name, sel.name)
            out.add(prefix + name)
            if name in ("matches", "chunks"):
                out |= wanted_fields(sel.selections, f"{prefix}{name}.")
    return out


def _docs_selection(info: Info[Any, Any]) -> set[str] | None:
    for field in info.selected_fields:
        for sel in field.selections:
            found = _find_docs(sel)
            if found is not None:
                return found
    return None


def _pushdown(info: Info[Any, Any]) -> Sequence[str]:
    """The document fields the last executors keep: those selected under ``docs``, or only
    ``id`` when the query selects none (its answer shows no document field, so nothing else
    needs to travel back)."""
    return sorted(_docs_selection(info) or ()) or ("id",)


def _find_docs(sel: Selection) -> set[str] | None:
    if isinstance(sel, FragmentSpread | InlineFragment):
        for inner in sel.selections:
            found = _find_docs(inner)
            if found is not None:
                return found
        return None
    if isinstance(sel, SelectedField) and sel.name == "docs":
        return wanted_fields(sel.selections)
    return None


async def response(post: Awaitable[data_request_pb2.DataRequest]) -> ResponseType:
    """The answer of a ``post`` run through the Flow (:func:`~meshflow.gateway.post.run_post`);
    its failures become GraphQL errors with their code."""
    try:
        answer = await post
    except RequestError as exc:
        raise request_error(exc) from None
    return ResponseType(
        request_id=answer.header.request_id,
        docs=[DocumentType(_pb=d) for d in answer.docs],
        results=cast(JSON, results_to_dict(answer.results)),
    )


@strawberry.type
class Query:
    @strawberry.field(description="The Flow's topology, each deployment's endpoints and health.")
    async def flow(self, info: Info[Any, Any]) -> FlowInfo:
        gateway = _gateway(info)
        if gateway.auth is not None:
            _require(info, gateway.auth.config.admin_scope, "the flow query")
        deployments = []
        nodes = gateway.traversal.topology.nodes
        transport = gateway.traversal.transport
        # Every shard at once: a silent deployment costs one probe timeout, not one each.
        answers = iter(
            await asyncio.gather(
                *(transport.describe(n.name, s) for n in nodes for s in range(len(n.shards)))
            )
        )
        for node in nodes:
            probes = [next(answers) for _ in node.shards]
            endpoints = sorted({e.name for p in probes if p is not None for e in p.endpoints})
            hub = next(
                (
                    HubExecutorInfo(
                        name=p.hub_name, version=p.hub_version, environment=p.hub_environment
                    )
                    for p in probes
                    if p is not None and p.hub_name
                ),
                None,
            )
            deployments.append(
                DeploymentInfo(
                    name=node.name,
                    needs=list(node.needs),
                    shards=len(node.shards),
                    replicas=len(node.shards[0]) if node.shards else 0,
                    polling=cast(JSON, dict(node.polling)),
                    endpoints=endpoints,
                    healthy=all(p is not None for p in probes),
                    hub=hub,
                )
            )
        edges = [
            Edge(source=need, target=node.name)
            for node in gateway.traversal.topology.nodes
            for need in node.needs
        ]
        edges += [Edge(source=leaf, target="gateway") for leaf in gateway.traversal.topology.leaves]
        return FlowInfo(
            deployments=deployments, edges=edges, healthy=all(d.healthy for d in deployments)
        )


RAN = "meshflow.ran"
"""Context key of the outcome of a ``post`` a compiled operation already ran: the resolver
answers with it instead of running the Flow again (``gateway/compiled.py``)."""


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Run the Flow for one endpoint on the given documents.")
    async def post(
        self,
        info: Info[Any, Any],
        on: str,
        docs: list[DocumentInput] | None = None,
        parameters: JSON | None = None,
        target_executor: str | None = None,
    ) -> ResponseType:
        ran = info.context.get(RAN)
        if ran is not None:  # a compiled run's answer, completed here (gateway/compiled.py)
            return await response(ran())
        return await response(
            run_post(
                _gateway(info),
                on=on,
                docs=docs or [],
                parameters=parameters,
                target_executor=target_executor,
                fields=_pushdown(info),
                max_docs=info.context["max_docs"],
                max_answer_bytes=info.context.get("max_answer_bytes"),
                **_caller(info),
            )
        )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Run one request per batch, at most maxInFlight at once; each answer is "
        "pushed as soon as it is ready (not in batch order: match them by requestId)."
    )
    async def stream(
        self,
        info: Info[Any, Any],
        on: str,
        batches: list[list[DocumentInput]],
        parameters: JSON | None = None,
        target_executor: str | None = None,
        max_in_flight: int = 16,
    ) -> AsyncGenerator[ResponseType, None]:
        if not 1 <= max_in_flight <= 1024:
            raise request_error(BadRequestError("maxInFlight must be 1 to 1024"))
        gateway = _gateway(info)
        if gateway.auth is not None:  # refuse before the first batch is sent
            _require(info, gateway.auth.config.scope_for(on), on)
        fields = _pushdown(info)
        slots = asyncio.Semaphore(max_in_flight)
        span = _subscription_span(on) if gateway.tracing else None

        async def send(batch: tuple[int, list[DocumentInput]]) -> ResponseType:
            index, docs = batch
            answer = await response(
                run_post(
                    gateway,
                    on=on,
                    docs=docs,
                    parameters=parameters,
                    target_executor=target_executor,
                    fields=fields,
                    max_docs=info.context["max_docs"],
                    **_caller(info),
                )
            )
            answer.batch = index
            return answer

        async def one(batch: tuple[int, list[DocumentInput]]) -> ResponseType | GraphQLError:
            # A batch waits for its slot (backpressure, as on a gRPC stream): never refused
            # for a busy gateway, while the subscription's own maxInFlight bounds its share.
            identity = info.context.get("identity")
            async with gateway.admitted(identity, None, "websocket", patient=True):
                if span is None:
                    return await send(batch)
                with trace.use_span(span, end_on_exit=False):
                    return await send(batch)

        def failed(
            batch: tuple[int, list[DocumentInput]], exc: Exception
        ) -> ResponseType | GraphQLError:
            if isinstance(exc, GraphQLError):
                return exc
            index = batch[0]  # a bug: still an answer, or the subscription hangs
            log.error("stream %r: batch %d failed in the gateway", on, index, exc_info=exc)
            return graphql_error(
                f"the gateway failed on batch {index} of the stream on {on!r}: "
                f"{type(exc).__name__}: {exc}; its log has the traceback",
                RequestError.graphql_code,
                batch=index,
            )

        answers = fan_out(
            enumerate(batches), one, failed, admit=slots.acquire, release=lambda _: slots.release()
        )
        try:
            async with contextlib.aclosing(answers):
                async for item in answers:
                    if isinstance(item, GraphQLError):
                        if span is not None:
                            span.set_status(Status(StatusCode.ERROR, item.message))
                        raise item
                    # each pushed answer is written here, in this task, within its own bound
                    limit_answer_bytes(info.context.get("max_answer_bytes"))
                    yield item
        finally:
            if span is not None:
                span.end()


def _subscription_span(on: str) -> Any:
    """The span of a ``stream`` subscription over a WebSocket: its batches are its children."""

    tracer = trace.get_tracer("meshflow.gateway")
    return tracer.start_span(
        "graphql subscription stream",
        kind=trace.SpanKind.SERVER,
        attributes={"meshflow.endpoint": on, "meshflow.door": "websocket"},
    )


# -- query fields for read-only endpoints -----------------------------------------------------

_ARG_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool, "json": JSON}


def field_name(endpoint: str) -> str | None:
    """The Python name of an endpoint's query field (Strawberry camel-cases it), or None."""
    name = endpoint.strip("/").replace("/", "_").replace("-", "_")
    if not name.isidentifier() or name in ("flow", "default") or keyword.iskeyword(name):
        return None
    return name


def read_only_endpoints(
    answers: Iterable[services_pb2.EndpointsResponse],
) -> dict[str, dict[str, services_pb2.Parameter]]:
    """The read-only endpoints in the ``answers`` of deployments and their parameters (a
    parameter two executors type differently becomes ``json``)."""
    found: dict[str, dict[str, services_pb2.Parameter]] = {}
    for answer in answers:
        for endpoint in answer.endpoints:
            if not endpoint.read_only:
                continue
            merge_parameters(found.setdefault(endpoint.name, {}), endpoint.parameters)
    return found


def _resolver(endpoint: str, params: dict[str, services_pb2.Parameter]) -> Any:
    async def resolve(self: Any, info: Info[Any, Any], **kwargs: Any) -> ResponseType:
        docs = kwargs.pop("docs", None) or []
        target = kwargs.pop("target_executor", None)
        parameters = {k: v for k, v in kwargs.items() if v is not None}
        return await response(
            run_post(
                _gateway(info),
                on=endpoint,
                docs=docs,
                parameters=parameters or None,
                target_executor=target,
                fields=_pushdown(info),
                max_docs=info.context["max_docs"],
                max_answer_bytes=info.context.get("max_answer_bytes"),
                **_caller(info),
            )
        )

    return endpoint_resolver(
        resolve, endpoint, params.values(), docs=list[DocumentInput], returns=ResponseType
    )


def endpoint_resolver(
    resolve: Callable[..., Any],
    endpoint: str,
    params: Iterable[services_pb2.Parameter],
    *,
    docs: Any,
    returns: Any,
) -> Callable[..., Any]:
    """Give ``resolve`` (``(self, info, **kwargs)``) the signature Strawberry reads an
    endpoint field's arguments from: ``docs`` (a list type, optional), ``targetExecutor``, and
    one optional argument per typed parameter of the endpoint (the executor's dataclass has
    the defaults)."""
    annotations: dict[str, Any] = {
        "info": Info[Any, Any],
        "docs": docs | None,
        "target_executor": str | None,
        "return": returns,
    }
    signature = [
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("info", inspect.Parameter.KEYWORD_ONLY, annotation=Info[Any, Any]),
        inspect.Parameter(
            "docs", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotations["docs"]
        ),
        inspect.Parameter(
            "target_executor",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=str | None,
        ),
    ]
    for p in params:
        if not p.name.isidentifier() or p.name in annotations:
            continue
        kind = _ARG_TYPES.get(p.type, JSON)
        annotation = list[kind] if p.list else kind  # type: ignore[valid-type]
        annotations[p.name] = annotation | None
        signature.append(
            inspect.Parameter(
                p.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation | None
            )
        )
    resolve.__signature__ = inspect.Signature(signature, return_annotation=returns)  # type: ignore[attr-defined]
    resolve.__annotations__ = annotations
    resolve.__name__ = f"resolve_{field_name(endpoint)}"
    return resolve


def query_type(
    endpoints: dict[str, dict[str, services_pb2.Parameter]], extra: dict[str, Any] | None = None
) -> type:
    """``Query`` with one field per read-only endpoint, besides ``flow``; ``extra`` fields
    (typed endpoints', from ``gateway/typed.py``) replace the generic ones of their name."""
    fields: dict[str, Any] = {}
    for endpoint, params in sorted(endpoints.items()):
        name = field_name(endpoint)
        if name is None:
            continue
        fields[name] = strawberry.field(
            resolver=_resolver(endpoint, params),
            description=f"Runs the read-only endpoint {endpoint} of the Flow.",
        )
    fields.update(extra or {})
    cls = type("Query", (Query,), fields)
    return strawberry.type(cls, name="Query")
