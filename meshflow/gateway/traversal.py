"""The traversal engine: walks one request through the Flow graph.

Both doors of the gateway (gRPC today, GraphQL next) hand it serialized DataRequests. A
deployment fires when all of its ``needs`` have answered; a chain forwards the bytes from hop
to hop without decoding documents; joins and shards polled with ``ALL`` decode and merge (see
:mod:`meshflow.gateway.merge`); shards polled with ``ID`` each get the documents they own,
still serialized (see :mod:`meshflow.gateway.sharding`). The first failure stops the walk and
its status, naming the executor, is the answer; other requests are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from meshflow.document.columnar import to_rows
from meshflow.document.proto import struct_to_dict
from meshflow.errors import BadRequestError, DeadlineExceeded, RequestError
from meshflow.gateway.merge import merge_requests, reduce_shards
from meshflow.gateway.sharding import reassemble, split
from meshflow.gateway.topology import GATEWAY, Node, Topology
from meshflow.gateway.transport import Transport
from meshflow.proto.v1 import data_request_pb2

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from meshflow.observability.metrics import GatewayMetrics

log = logging.getLogger("meshflow.gateway")

_OK = data_request_pb2.Status.OK
# Appended to a request (concatenated messages merge) to mark the call to a leaf.
_LAST_HOP = data_request_pb2.DataRequest(
    header=data_request_pb2.Header(last_hop=True)
).SerializeToString()


class Traversal:
    """Runs DataRequests through a :class:`Topology` over a :class:`Transport`."""

    def __init__(
        self,
        topology: Topology,
        transport: Transport,
        *,
        metrics: GatewayMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.topology = topology
        self.transport = transport
        self.metrics = metrics
        self.tracer = tracer
        # Each call to a deployment; observed (a span, a hop time) only when asked for.
        self._send: Callable[[str, int, bytes, float | None], Awaitable[bytes]] = (
            transport.call if metrics is None and tracer is None else self._observed_call
        )
        self._chain = topology.is_chain
        self._leaves = topology.leaves
        self._shard_cursor: dict[str, Iterator[int]] = {
            n.name: itertools.cycle(range(len(n.shards))) for n in topology.nodes
        }

    async def run(
        self, data: bytes, endpoint: str, deadline: float | None, *, pushdown: bool = False
    ) -> bytes:
        """Walk the graph with the serialized request ``data``; return the serialized answer.

        ``deadline`` is a ``time.monotonic()`` instant or None. With ``pushdown`` (the request
        names the fields it wants back), calls to the leaves are marked as the last hop, where
        executors drop the other fields. Raises :class:`DeadlineExceeded` when the deadline
        passes; other failures come back as an error status.
        """
        if self._chain:
            last = self.topology.nodes[-1]
            for node in self.topology.nodes:
                if pushdown and node is last:
                    data += _LAST_HOP
                data = await self._call(node, data, endpoint, deadline)
                if _failed(data):
                    return data
            return data
        return await self._run_graph(data, endpoint, deadline, pushdown)

    async def _run_graph(
        self, data: bytes, endpoint: str, deadline: float | None, pushdown: bool
    ) -> bytes:
        tasks: dict[str, asyncio.Task[bytes]] = {}

        async def given(need: str) -> bytes:
            return data if need == GATEWAY else await tasks[need]

        async def fire(node: Node) -> bytes:
            inputs = list(await asyncio.gather(*(given(n) for n in node.needs)))
            for item in inputs:
                if _failed(item):
                    return item
            with _step(node.name, endpoint):
                payload = inputs[0] if len(inputs) == 1 else _merge(inputs)
                if pushdown and node.name in self._leaves:
                    payload += _LAST_HOP
            return await self._call(node, payload, endpoint, deadline)

        for node in self.topology.nodes:
            tasks[node.name] = asyncio.ensure_future(fire(node))
        try:
            outputs = list(await asyncio.gather(*(tasks[n] for n in self._leaves)))
        finally:
            for task in tasks.values():
                task.cancel()
        failed = [o for o in outputs if _failed(o)]
        if failed:
            return failed[0]
        with _step("gateway", endpoint, "merging the leaves' answers"):
            return outputs[0] if len(outputs) == 1 else _merge(outputs)

    async def _call(self, node: Node, data: bytes, endpoint: str, deadline: float | None) -> bytes:
        timeout = node.timeout
        callers = False  # is the hop bounded by the caller's deadline, not the deployment's?
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(
                    f"the request's deadline passed before executor {node.name!r} was called"
                )
            callers = timeout is None or remaining <= timeout
            timeout = remaining if callers else timeout
        try:
            if len(node.shards) == 1:
                return await self._send(node.name, 0, data, timeout)
            polling = node.polling_for(endpoint or "/")
            if polling == "ANY":
                shard = next(self._shard_cursor[node.name])
                return await self._send(node.name, shard, data, timeout)
            parts = split(data, len(node.shards)) if polling == "ID" else None
            if parts is not None:
                owned = await asyncio.gather(
                    *(self._send(node.name, p.shard, p.data, timeout) for p in parts)
                )
                failed = next((a for a in owned if _failed(a)), None)
                return failed if failed is not None else reassemble(parts, owned, node.name)
            answers = await asyncio.gather(
                *(self._send(node.name, shard, data, timeout) for shard in range(len(node.shards)))
            )
        except DeadlineExceeded:
            if callers:
                raise  # the caller's deadline: answered with DEADLINE_EXCEEDED
            late = DeadlineExceeded(
                f"executor {node.name!r} did not answer within its timeout of {timeout or 0:g} s"
            )
            return _error_answer(data, node.name, endpoint, late)
        except BadRequestError:
            raise  # the request itself is wrong: answered with INVALID_ARGUMENT
        except RequestError as exc:
            return _error_answer(data, node.name, endpoint, exc)
        except Exception as exc:
            raise internal_error(exc, node.name, endpoint) from exc
        for answer in answers:
            if _failed(answer):
                return answer
        with _step(node.name, endpoint, "reducing the shards' answers"):
            decoded = [_rows(a) for a in answers]
            parameters = struct_to_dict(decoded[0].parameters)
            reduced = reduce_shards(decoded, parameters, deployment=node.name)
            return reduced.SerializeToString()

    async def _observed_call(
        self, name: str, shard: int, data: bytes, timeout: float | None
    ) -> bytes:
        """One call to a deployment, timed, in a client span of its own (``call <deployment>``)
        whose W3C ``traceparent`` travels in the call's metadata."""
        started = time.perf_counter()
        try:
            if self.tracer is None or not _sampled():
                # An unsampled request: no span, no trace headers (executors and sidecars
                # then trace nothing either).
                return await self.transport.call(name, shard, data, timeout)
            return await self._traced_call(name, shard, data, timeout)
        finally:
            if self.metrics is not None:
                self.metrics.hop(name)(time.perf_counter() - started)

    async def _traced_call(
        self, name: str, shard: int, data: bytes, timeout: float | None
    ) -> bytes:
        assert self.tracer is not None
        attributes: dict[str, str | int] = {
            "meshflow.deployment": name,
            "meshflow.shard": shard,
            "rpc.system": "grpc",
            "rpc.service": "meshflow.v1.ExecutorService",
            "rpc.method": "Process",
        }
        with self.tracer.start_as_current_span(
            f"call {name}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            # Only traced requests carry trace headers (an unsampled one is not traced
            # anywhere: executors never start a trace). Envoy force-traces a request that
            # carries x-client-trace-id and an x-request-id, and samples no other.
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            carrier["x-client-trace-id"] = format(span.get_span_context().trace_id, "032x")
            carrier["x-request-id"] = str(uuid.uuid4())  # Envoy samples by request id
            metadata = tuple(carrier.items())
            answer = await self.transport.call(name, shard, data, timeout, metadata)
            status = data_request_pb2.DataRequestHead.FromString(answer).status
            if status.code != _OK:
                span.set_status(Status(StatusCode.ERROR, f"{status.executor}: {status.message}"))
                span.set_attribute("meshflow.exception_type", status.exception_type)
            return answer


def internal_error(
    exc: BaseException, step: str, endpoint: str, doing: str = "calling it"
) -> RequestError:
    """An unexpected exception of the gateway as a :class:`RequestError` (gRPC ``INTERNAL``,
    GraphQL ``INTERNAL_SERVER_ERROR``) that names the step; its traceback goes to the log."""
    log.error(
        "the gateway failed at step %r of endpoint %r (%s)",
        step,
        endpoint or "/",
        doing,
        exc_info=exc,
    )
    return RequestError(
        f"the gateway failed at step {step!r} of endpoint {endpoint or '/'!r} ({doing}): "
        f"{type(exc).__name__}: {exc}; this is a bug of the gateway, its log has the traceback"
    )


@contextlib.contextmanager
def _step(step: str, endpoint: str, doing: str = "merging its inputs") -> Iterator[None]:
    """Turn an unexpected exception inside the block into an internal error naming ``step``."""
    try:
        yield
    except RequestError:
        raise
    except Exception as exc:
        raise internal_error(exc, step, endpoint, doing) from exc


def _sampled() -> bool:
    return trace.get_current_span().get_span_context().trace_flags.sampled


def _failed(data: bytes) -> bool:
    return data_request_pb2.DataRequestHead.FromString(data).status.code != _OK


def _merge(outputs: list[bytes]) -> bytes:
    return merge_requests([_rows(o) for o in outputs]).SerializeToString()


def _rows(data: bytes) -> data_request_pb2.DataRequest:
    """Decode an answer for a merge, which works on documents in the row layout."""
    request = data_request_pb2.DataRequest.FromString(data)
    to_rows(request)
    return request


def _error_answer(data: bytes, executor: str, endpoint: str, exc: RequestError) -> bytes:
    """The request ``data`` with an error status naming ``executor``; its docs untouched."""
    status = data_request_pb2.Status(
        code=data_request_pb2.Status.ERROR,
        message=str(exc),
        executor=executor,
        endpoint=endpoint or "/",
        exception_type=type(exc).__name__,
    )
    # Concatenated messages merge: appending a DataRequest with only a status sets it.
    return data + data_request_pb2.DataRequest(status=status).SerializeToString()
