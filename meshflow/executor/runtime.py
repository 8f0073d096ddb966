"""Serve one Executor instance over grpc.aio, with gRPC health checking.

The runtime parses a :class:`DataRequest`, runs the endpoint the header names and answers
with the same request, its documents changed. Requests for an endpoint the executor does not
serve, or aimed at another executor, go back untouched without being decoded.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from meshflow.document import DocumentArray
from meshflow.document.columnar import (
    columns_field_pieces,
    columns_pieces,
    documents_from_request,
    prune_columns,
    unchanged_columns,
)
from meshflow.document.proto import (
    dict_to_struct,
    documents_to_proto,
    prune,
    struct_to_dict,
    unchanged_on_wire,
)
from meshflow.errors import BadRequestError, ConfigError, UnverifiedIdentityError
from meshflow.executor.batching import Batcher, CallFailed, Timing
from meshflow.executor.calltime import LoopCalls
from meshflow.executor.describe import describe_endpoints
from meshflow.executor.executor import EndpointMethod, Executor
from meshflow.executor.parameters import build as build_params
from meshflow.executor.parameters import for_executor
from meshflow.executor.provenance import hub_provenance
from meshflow.grpc_lifecycle import serve_forever
from meshflow.observability.tracing import shutdown_tracing
from meshflow.proto.v1 import data_request_pb2, services_pb2
from meshflow.spec.batching import DynamicBatching
from meshflow.types import DEFAULT_ENDPOINT, SYNC_CALLS, SyncCalls
from meshflow.voucher import Verifier, identity_of
from meshflow.wire import EXECUTOR_ENDPOINTS, EXECUTOR_PROCESS, grpc_status

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from meshflow.observability.metrics import ExecutorMetrics

log = logging.getLogger("meshflow.executor")

_SERVICE = "meshflow.v1.ExecutorService"

TimeRemaining = Callable[[], float | None]

INLINE_CALL_LIMIT = 0.002
"""Seconds a sync endpoint's call may take on the event loop: past it, the endpoint's calls go
to the worker threads. Handing a call to a thread and back costs 0.1-0.3 ms of CPU on a
2-core VM (two cross-CPU wake-ups), more than a short call itself. Two such calls within
100 calls, or one past :data:`LONG_CALL`, and the endpoint leaves the loop."""

LONG_CALL = 0.02
"""Seconds past which one call on the event loop is enough to send its endpoint to the
worker threads."""


def _timed(method: Callable[..., Any], kwargs: dict[str, Any], timing: list[float]) -> Any:
    """``method(**kwargs)``, noting in ``timing`` when it started and ended."""
    timing[0] = time.perf_counter()
    try:
        return method(**kwargs)
    finally:
        timing[1] = time.perf_counter()


class ExecutorRuntime:
    """Runs requests against one Executor instance.

    Async endpoints run on the event loop. Sync endpoints run in a thread pool of
    ``sync_workers`` threads (one by default, so an Executor's state is never touched by two
    threads at once), so that health checks keep answering while a sync model works. With
    ``sync_calls='auto'`` (the default), a sync endpoint's calls run on the event loop instead
    from its second call on, until its calls compute or block for longer than
    :data:`INLINE_CALL_LIMIT` (then in the threads for good), and never while another call is
    in the threads (so with one worker thread, one sync call runs at a time, as before).
    Endpoints that batch, and methods marked ``@requests(in_thread=True)``, always use the
    threads; ``sync_calls='thread'`` sends every sync endpoint there.

    Endpoints with dynamic batching (``@dynamic_batching`` on the method, or ``batching``, the
    deployment's ``uses_dynamic_batching``, which wins) go through a :class:`Batcher` each.
    """

    def __init__(
        self,
        executor: Executor,
        *,
        name: str,
        sync_workers: int = 1,
        metrics: ExecutorMetrics | None = None,
        tracer: Tracer | None = None,
        verifier: Verifier | None = None,
        batching: Mapping[str, DynamicBatching] | None = None,
        sync_calls: SyncCalls = "auto",
    ) -> None:
        if sync_calls not in SYNC_CALLS:
            raise ConfigError(f"sync_calls is {sync_calls!r}; use one of {', '.join(SYNC_CALLS)}")
        self.executor = executor
        self.verifier = verifier
        """The gateway's public key: with it, every request needs the gateway's voucher;
        without it, none may claim an identity."""
        self.name = name
        self.metrics = metrics
        self.tracer = tracer
        self._pool = ThreadPoolExecutor(max_workers=sync_workers, thread_name_prefix=name)
        self._endpoints = type(executor).endpoints
        self._batchers = self._make_batchers(batching or {}, sync_workers)
        self._in_pool: set[Future[Any]] = set()
        """Calls submitted to the pool and not yet done: while there are any, sync calls go
        there too, so that they keep their order and never wait on the loop for a lock that
        a call in a thread holds."""
        self._loop_calls = LoopCalls(
            {
                name
                for name, spec in self._endpoints.items()
                if not (spec.is_async or spec.in_thread or name in self._batchers)
            }
            if sync_calls == "auto"
            else set(),
            limit=INLINE_CALL_LIMIT,
            long_call=LONG_CALL,
        )
        """The sync endpoints whose calls run on the event loop (see :meth:`_invoke`)."""

    def _make_batchers(
        self, overrides: Mapping[str, DynamicBatching], sync_workers: int
    ) -> dict[str, Batcher]:
        unknown = sorted(set(overrides) - set(self._endpoints))
        if unknown:
            raise ConfigError(
                f"executor {self.name!r}: dynamic batching for {', '.join(unknown)}, which "
                f"{type(self.executor).__name__} does not serve (its endpoints: "
                f"{', '.join(sorted(self._endpoints)) or 'none'})"
            )
        batchers = {}
        for name, spec in self._endpoints.items():
            options = overrides.get(name) or spec.batching
            if options is None:
                continue
            on_batch = None
            if self.metrics is not None:
                on_batch = functools.partial(self.metrics.observe_batch, name)
            batchers[name] = Batcher(
                options,
                functools.partial(self._batch_call, spec),
                concurrency=1 if spec.is_async else sync_workers,
                ahead=not spec.is_async,
                deployment=self.name,
                endpoint=name,
                tracer=self.tracer,
                on_batch=on_batch,
            )
        return batchers

    def batcher(self, endpoint: str) -> Batcher | None:
        """The batcher of ``endpoint``, if it batches."""
        return self._batchers.get(endpoint)

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop_calls.close()

    def endpoint_for(self, endpoint: str) -> EndpointMethod | None:
        """The method serving ``endpoint``, the default endpoint's, or None to pass through."""
        if not endpoint or endpoint == "/":
            endpoint = DEFAULT_ENDPOINT
        return self._endpoints.get(endpoint) or self._endpoints.get(DEFAULT_ENDPOINT)

    async def process(self, data: bytes, time_remaining: TimeRemaining | None = None) -> bytes:
        """Run one serialized DataRequest and return the serialized answer.

        On the last hop of a traversal (``header.last_hop``) with ``header.fields`` set, the
        answer keeps only those document fields: embeddings and tensors nobody asked for never
        leave the mesh. ``time_remaining``: the call's (seconds or None), for a request that
        waits for its batch.
        """
        head = data_request_pb2.DataRequestHead.FromString(data)
        answer = await self._process(data, head, time_remaining)
        if head.header.last_hop and head.header.fields:
            pruned = data_request_pb2.DataRequest.FromString(answer)
            if pruned.HasField("columns"):
                prune_columns(pruned.columns, set(head.header.fields))
            else:
                prune(pruned.docs, head.header.fields)
            return pruned.SerializeToString()
        return answer

    async def _process(
        self,
        data: bytes,
        head: data_request_pb2.DataRequestHead,
        time_remaining: TimeRemaining | None = None,
    ) -> bytes:
        target = head.header.target_executor
        if target and target != self.name:
            return data
        if head.status.code != data_request_pb2.Status.OK:
            return data
        spec = self.endpoint_for(head.header.endpoint)
        if spec is None:
            return data
        # Before anything is decoded: only the gateway's voucher says who the caller is.
        identity = identity_of(head.header, self.verifier)
        request = data_request_pb2.DataRequest.FromString(data)
        started = time.perf_counter()
        try:
            received = documents_from_request(request)
        except ValueError as exc:  # an array whose bytes, dtype and shape disagree
            raise BadRequestError(f"executor {self.name!r}: {exc}") from None
        docs = received
        n_docs = len(received)
        raw_parameters = for_executor(struct_to_dict(request.parameters), self.name)
        parameters: Any = raw_parameters
        if spec.params is not None:
            try:
                parameters = build_params(spec.params, parameters, spec.name)
            except BadRequestError as exc:  # the caller's mistake: INVALID_ARGUMENT
                raise BadRequestError(
                    f"executor {self.name!r}, endpoint {spec.name!r}: {exc}"
                ) from None
        kwargs: dict[str, Any] = {
            "docs": docs,
            "parameters": parameters,
            "endpoint": request.header.endpoint or "/",
            "request_id": request.header.request_id,
            "auth": identity,
        }
        batcher = self._batchers.get(spec.name) if self._batchers else None
        if spec.accepts is not None and batcher is None:
            kwargs = {k: v for k, v in kwargs.items() if k in spec.accepts}
        method: Callable[..., Any] = getattr(self.executor, spec.method)
        timing = [started, started]  # when the method started and ended
        error: str | None = None
        if self.metrics is not None:
            self.metrics.in_flight.inc()
        try:
            try:
                if batcher is not None:
                    docs, result = await self._batched(
                        batcher, spec, docs, kwargs, raw_parameters, timing, time_remaining
                    )
                elif self.tracer is not None and _in_trace():
                    result = await self._traced(spec, method, kwargs, timing, n_docs)
                else:
                    result = await self._invoke(spec, method, kwargs, timing)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # the call itself was cancelled (the caller went away)
                # The method let out the cancellation of something it awaited: left to
                # propagate, the call would end unanswered and its caller wait out its deadline.
                raise RuntimeError(
                    f"endpoint {spec.name} of executor {self.name!r} raised "
                    "asyncio.CancelledError (a task or future it awaited was cancelled); catch "
                    "it in the method, or raise another error"
                ) from None
            finally:
                if self.metrics is not None:
                    self.metrics.in_flight.dec()
            answer = self._answer(data, request, received, docs, result, spec)
        except Exception as exc:
            error = type(exc).__name__
            log.exception(
                "endpoint %s (%s.%s) of executor %r failed",
                spec.name,
                type(self.executor).__name__,
                spec.method,
                self.name,
            )
            answer = _failure(request, self.name, exc)
        if self.metrics is not None:
            self.metrics.observe(
                spec.name,
                total=time.perf_counter() - started,
                queue=timing[0] - started,
                processing=timing[1] - timing[0],
                docs=n_docs,
                error=error,
            )
        log.debug(
            "request %s %s: %d docs in %.2f ms",
            request.header.request_id,
            spec.name,
            n_docs,
            (time.perf_counter() - started) * 1e3,
        )
        return answer

    async def _batched(
        self,
        batcher: Batcher,
        spec: EndpointMethod,
        docs: DocumentArray,
        kwargs: dict[str, Any],
        raw_parameters: Any,
        timing: list[float],
        time_remaining: TimeRemaining | None,
    ) -> tuple[DocumentArray, Any]:
        """Run the request in a batch: its own documents back, and the method's result."""
        # Requests that would see different arguments never share a call.
        same = json.dumps(raw_parameters, sort_keys=True, default=str)
        key: Hashable = (kwargs["endpoint"], same)
        if spec.accepts is None or "auth" in spec.accepts:
            key = (kwargs["endpoint"], same, kwargs["auth"])
        span = None
        if self.tracer is not None and _in_trace():
            span = trace.get_current_span().get_span_context()
        progress = Timing()
        try:
            served = await batcher.submit(
                docs,
                key=key,
                kwargs=kwargs,
                time_remaining=time_remaining() if time_remaining is not None else None,
                span=span,
                timing=progress,
            )
        except Exception:  # failed and expired requests waited as really as served ones
            self._batch_timing(spec, progress, timing)
            raise
        self._batch_timing(spec, progress, timing)
        if span is not None:
            current = trace.get_current_span()
            current.set_attribute("meshflow.batch.docs", served.batch_docs)
            current.set_attribute("meshflow.batch.requests", served.batch_requests)
        return served.docs, served.result

    def _batch_timing(self, spec: EndpointMethod, progress: Timing, timing: list[float]) -> None:
        """Record where a batched request's time went, whatever became of it."""
        if progress.started is not None and progress.ended is not None:
            timing[0], timing[1] = progress.started, progress.ended
        else:  # it never ran (its deadline passed in the queue): all its time was waiting
            timing[0] = timing[1] = time.perf_counter()
        if self.metrics is not None and progress.waited is not None:
            self.metrics.observe_batch_wait(spec.name, progress.waited)

    async def _batch_call(
        self, spec: EndpointMethod, docs: DocumentArray, kwargs: dict[str, Any]
    ) -> tuple[Any, float, float]:
        """One call of ``spec``'s method on a batch, with its first request's arguments."""
        kwargs = {**kwargs, "docs": docs}
        if spec.accepts is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in spec.accepts}
        method: Callable[..., Any] = getattr(self.executor, spec.method)
        now = time.perf_counter()
        timing = [now, now]  # as is, if the method never started
        try:
            result = await self._invoke(spec, method, kwargs, timing)
        except Exception as exc:
            raise CallFailed(exc, timing[0], timing[1]) from exc
        return result, timing[0], timing[1]

    async def _invoke(
        self,
        spec: EndpointMethod,
        method: Callable[..., Any],
        kwargs: dict[str, Any],
        timing: list[float],
    ) -> Any:
        """Call the endpoint method: awaited, on the loop while its calls are short (after a
        first call in the pool, which pays one-time costs: imports, caches, a model loaded on
        first use), or in the thread pool (in a copy of this context, so that spans the
        method opens join the request's trace)."""
        if spec.is_async:
            timing[0] = time.perf_counter()
            try:
                return await method(**kwargs)
            finally:
                timing[1] = time.perf_counter()
        if self._loop_calls.runs(spec.name) and not self._in_pool:
            return self._on_loop_call(spec, method, kwargs, timing)

        context = contextvars.copy_context()
        future = self._pool.submit(context.run, _timed, method, kwargs, timing)
        self._in_pool.add(future)
        future.add_done_callback(self._in_pool.discard)
        try:
            return await asyncio.wrap_future(future)
        finally:
            self._loop_calls.warmed(spec.name)  # a first call, with its one-time costs

    def _on_loop_call(
        self,
        spec: EndpointMethod,
        method: Callable[..., Any],
        kwargs: dict[str, Any],
        timing: list[float],
    ) -> Any:
        """A sync method's call on the event loop's thread, as the pool would make it: in a
        copy of the context, with no running loop (so that ``asyncio.run`` and sync clients
        built on it work inside). Calls that compute or are blocked (on I/O, a sleep or a
        lock) for long send the endpoint's later calls to the pool; waiting for a CPU (a busy
        machine) does not count (:class:`~meshflow.executor.calltime.LoopCalls`)."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        before = self._loop_calls.usage()
        asyncio._set_running_loop(None)
        try:
            return context.run(_timed, method, kwargs, timing)
        finally:
            asyncio._set_running_loop(loop)
            why = self._loop_calls.judge(spec.name, before, timing[1] - timing[0])
            if why:
                log.info(
                    "endpoint %s (%s.%s) of executor %r %s; its calls run in the worker "
                    "threads from now on",
                    spec.name,
                    type(self.executor).__name__,
                    spec.method,
                    self.name,
                    why,
                )

    async def _traced(
        self,
        spec: EndpointMethod,
        method: Callable[..., Any],
        kwargs: dict[str, Any],
        timing: list[float],
        docs: int,
    ) -> Any:
        """:meth:`_invoke` inside a span for the endpoint method (errors mark it)."""
        assert self.tracer is not None
        attributes: dict[str, str | int] = {
            "meshflow.deployment": self.name,
            "meshflow.endpoint": spec.name,
            "meshflow.method": f"{type(self.executor).__name__}.{spec.method}",
            "meshflow.docs": docs,
        }
        with self.tracer.start_as_current_span(f"{self.name} {spec.name}", attributes=attributes):
            return await self._invoke(spec, method, kwargs, timing)

    def _answer(
        self,
        data: bytes,
        request: data_request_pb2.DataRequest,
        received: DocumentArray,
        docs: DocumentArray,
        result: Any,
        spec: EndpointMethod,
    ) -> bytes:
        """The serialized answer: the request with the endpoint's documents and results, in
        the layout the request came in (columns the endpoint left alone are copied as they
        came)."""
        results = b""
        if isinstance(result, dict):
            answer = data_request_pb2.DataRequest(results={self.name: dict_to_struct(result)})
            if spec.reduce:
                answer.reduce[self.name].rules.update(spec.reduce)
            results = answer.SerializeToString()
        elif isinstance(result, DocumentArray):
            docs = result
        elif isinstance(result, list | tuple):
            docs = DocumentArray(result)
        elif result is not None:
            raise TypeError(
                f"endpoint {spec.name} ({spec.method}) returned {type(result).__name__}; "
                "return None (docs changed in place), a DocumentArray or a dict"
            )
        source = received._columns
        if source is not None:
            if unchanged_columns(docs, source):
                return data + results  # as below
            # One join: the arrays are copied once, into the answer itself.
            pieces = columns_field_pieces(columns_pieces(docs, source))
            request.ClearField("columns")
            return b"".join((request.SerializeToString(), *pieces, results))
        if len(docs) == len(request.docs) and unchanged_on_wire(docs):
            # The documents are what came in: answer with the request's own bytes. Appending
            # a serialized message merges it, which adds the results.
            return data + results
        del request.docs[:]
        documents_to_proto(docs, request.docs)
        return request.SerializeToString() + results

    def describe(self) -> services_pb2.EndpointsResponse:
        """The endpoints this executor serves, with their read-only flag and parameters."""
        answer = describe_endpoints(self.name, self._endpoints)
        hub = hub_provenance(type(self.executor))
        if hub is not None:
            answer.hub_name, answer.hub_version, answer.hub_environment = hub
        return answer


def _failure(request: data_request_pb2.DataRequest, executor: str, exc: Exception) -> bytes:
    status = request.status
    status.code = data_request_pb2.Status.ERROR
    status.message = str(exc) or repr(exc)
    status.executor = executor
    status.endpoint = request.header.endpoint or "/"
    status.exception_type = type(exc).__name__
    return request.SerializeToString()


def _handlers(runtime: ExecutorRuntime) -> grpc.GenericRpcHandler:
    async def process(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            if runtime.tracer is not None:
                return await _traced_process(runtime, data, context)
            return await runtime.process(data, context.time_remaining)
        except DecodeError:
            await context.abort(grpc_status(BadRequestError), "malformed DataRequest")
            raise  # unreachable: abort raises
        except (BadRequestError, UnverifiedIdentityError) as exc:
            if isinstance(exc, UnverifiedIdentityError):
                log.warning("executor %r refused a request: %s", runtime.name, exc)
            await context.abort(grpc_status(exc), str(exc))
            raise  # unreachable: abort raises

    async def endpoints(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return bytes(runtime.describe().SerializeToString())

    return grpc.method_handlers_generic_handler(
        _SERVICE,
        {
            EXECUTOR_PROCESS.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(process),
            EXECUTOR_ENDPOINTS.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(endpoints),
        },
    )


def _in_trace() -> bool:
    return trace.get_current_span().is_recording()


def _sampled_parent(traceparent: str) -> bool:
    """Whether a W3C ``traceparent`` (version-traceid-parentid-flags) is sampled."""
    try:
        return bool(int(traceparent[-2:], 16) & 1) if len(traceparent) >= 55 else False
    except ValueError:
        return False


async def _traced_process(
    runtime: ExecutorRuntime, data: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> bytes:
    """:meth:`ExecutorRuntime.process` in the call's server span, continuing the caller's
    W3C ``traceparent`` from the call's metadata."""

    assert runtime.tracer is not None
    carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    if not _sampled_parent(carrier.get("traceparent", "")):
        # Envoy's ingress span passes an unsampled traceparent on every request the gateway
        # did not trace: no span for those (nor for a request without one).
        return await runtime.process(data, context.time_remaining)
    with runtime.tracer.start_as_current_span(
        EXECUTOR_PROCESS,
        context=propagate.extract(carrier),
        kind=SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": _SERVICE,
            "rpc.method": "Process",
            "meshflow.deployment": runtime.name,
        },
    ):
        return await runtime.process(data, context.time_remaining)


async def serve_executor(
    executor: Executor,
    *,
    name: str,
    address: str,
    ready_file: str | None = None,
    drain_timeout: float = 10.0,
    sync_workers: int = 1,
    sync_calls: SyncCalls = "auto",
    metrics: tuple[str, int] | None = None,
    tracing: bool = False,
    gateway_key: bytes | None = None,
    batching: Mapping[str, DynamicBatching] | None = None,
) -> None:
    """Serve ``executor`` on ``address`` (``host:port`` or ``unix:/path``) until stopped;
    with ``gateway_key`` (the gateway's public key, PEM), only identities the gateway vouched
    for, on every request;
    with ``metrics`` (host, port), Prometheus ``/metrics`` too; with ``tracing`` (set up by
    the caller), a span per endpoint call; ``batching``: dynamic batching per endpoint, over
    the methods' own ``@dynamic_batching``; ``sync_calls``: where sync endpoint methods run
    (see :class:`ExecutorRuntime`)."""
    exporter = None
    if metrics is not None:
        # lazy: prometheus_client (3.4 MB of imports) only where metrics are on
        from meshflow.observability.metrics import ExecutorMetrics

        exporter = ExecutorMetrics(name)
    tracer = None
    if tracing:
        tracer = trace.get_tracer("meshflow.executor")
    runtime = ExecutorRuntime(
        executor,
        name=name,
        sync_workers=sync_workers,
        sync_calls=sync_calls,
        metrics=exporter,
        tracer=tracer,
        verifier=Verifier(gateway_key) if gateway_key else None,
        batching=batching,
    )

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((_handlers(runtime),))

    async def start_metrics() -> dict[str, Any]:
        if exporter is None or metrics is None:
            return {}
        return {"metrics_port": exporter.serve(*metrics)}

    async def closed() -> None:
        runtime.close()
        if exporter is not None:
            exporter.stop()
        if tracing:
            shutdown_tracing()

    await serve_forever(
        register,
        address=address,
        ready_file=ready_file,
        drain_timeout=drain_timeout,
        what=f"executor {name!r}",
        on_stop=closed,
        services=(_SERVICE,),
        also_start=start_metrics,
    )
