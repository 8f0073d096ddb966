"""The gRPC door of the gateway: ``GatewayService`` (unary ``Post``, bidirectional ``Stream``).

The gateway reads only the header of each request, hands the bytes to the traversal engine and
answers with what the last executors sent back. It bounds the requests it holds
(:mod:`meshflow.gateway.admission`): a ``Post`` that finds no slot waits in the admission
queue or is refused at once with ``RESOURCE_EXHAUSTED`` and a ``grpc-retry-pushback-ms``
trailer (a ``Stream`` simply stops reading until a slot frees, which is backpressure on that
stream).

With an :class:`~meshflow.gateway.auth.Authenticator`, every request is checked before its
traversal starts: the door passes the caller's verified identity (gRPC: the ``authorization``
metadata), the gateway checks the endpoint's scope and vouches for the identity in the request
header (:mod:`meshflow.voucher`: signed with a key only the gateway holds), which is the only
identity executors believe. Whatever voucher a client wrote there itself is dropped.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import trace

from meshflow.errors import (
    BadRequestError,
    ConfigError,
    ForbiddenError,
    OverloadedError,
    RequestError,
)
from meshflow.gateway.admission import Admission, Ticket
from meshflow.gateway.fanout import fan_out
from meshflow.gateway.traversal import Traversal, internal_error
from meshflow.identity import Identity
from meshflow.observability.tracing import current_trace_id
from meshflow.proto.v1 import data_request_pb2
from meshflow.spec.admission import AdmissionPolicy
from meshflow.wire import (
    GATEWAY_POST,
    GATEWAY_STREAM,
    MISSING_SCOPE,
    RETRY_PUSHBACK,
    grpc_status,
)

if TYPE_CHECKING:
    from meshflow.gateway.auth import Authenticator
    from meshflow.observability.metrics import GatewayMetrics
    from meshflow.voucher import Signer

log = logging.getLogger("meshflow.gateway")
access = logging.getLogger("meshflow.access")

_SERVICE = "meshflow.v1.GatewayService"

ADMITTED: contextvars.ContextVar[bool] = contextvars.ContextVar("admitted", default=False)
"""True inside a request a door already holds a slot for (the HTTP door takes it before
reading the body): :meth:`Gateway.run` takes none then."""
_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class Gateway:
    """Serves ``GatewayService`` over a :class:`Traversal`."""

    def __init__(
        self,
        traversal: Traversal,
        *,
        max_in_flight: int = 1024,
        admission: AdmissionPolicy | None = None,
        auth: Authenticator | None = None,
        signer: Signer | None = None,
        metrics: GatewayMetrics | None = None,
        tracing: bool = False,
    ) -> None:
        if max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if auth is not None and signer is None:
            raise ConfigError(
                "a gateway that checks tokens needs a signing key to vouch for identities "
                "(--signing-key-file; a local Flow makes one)"
            )
        self.traversal = traversal
        self.auth = auth
        self.signer = signer
        self.metrics = metrics
        self.tracing = tracing
        self.max_in_flight = max_in_flight
        self.admission = Admission(
            admission or AdmissionPolicy(), max_in_flight, fair=auth is not None
        )
        if metrics is not None:  # the gauges read the counters when scraped
            metrics.in_flight.set_function(lambda: self.admission.in_flight)
            metrics.limit.set_function(lambda: self.admission.limit)
            metrics.queued.set_function(lambda: self.admission.queued)

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    def handler(self) -> grpc.GenericRpcHandler:
        # With auth, Post is served as a client-streaming handler: gRPC then reads the
        # request message only when the handler asks for it, after the token is checked, so
        # an anonymous caller cannot make the gateway read (and hold) a 64 MiB message.
        post = (
            grpc.unary_unary_rpc_method_handler(self.post)
            if self.auth is None
            else grpc.stream_unary_rpc_method_handler(self.post_after_auth)
        )
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                GATEWAY_POST.rsplit("/", 1)[1]: post,
                GATEWAY_STREAM.rsplit("/", 1)[1]: grpc.stream_stream_rpc_method_handler(
                    self.stream
                ),
            },
        )

    async def run(
        self,
        data: bytes,
        deadline: float | None,
        identity: Identity | None = None,
        *,
        door: str = "",
    ) -> bytes:
        """Run one serialized request through the Flow, in a slot of its admission.

        Every door calls this, with the caller's verified ``identity`` when the Flow checks
        tokens. Raises :class:`OverloadedError` when admission refuses it, the auth errors,
        and other :class:`RequestError` subclasses; executor failures come back as a status.
        """
        if ADMITTED.get():
            return await self._run(data, deadline, identity, door)
        async with self.admitted(identity, deadline, door):
            return await self._run(data, deadline, identity, door)

    async def admit(
        self, identity: Identity | None, deadline: float | None, door: str, *, patient: bool = False
    ) -> Ticket:
        """A slot of the gateway's admission (see
        :class:`~meshflow.gateway.admission.Admission`), given back with
        ``admission.release``; refusals are counted in the metrics and raised."""
        subject = identity.subject if identity is not None else ""
        try:
            return await self.admission.acquire(subject, deadline, patient=patient)
        except OverloadedError as exc:
            if self.metrics is not None:
                self.metrics.observe(door, "-", exc.graphql_code.lower(), 0.0)
            raise

    def refusal_now(
        self, identity: Identity | None, deadline: float | None, door: str
    ) -> OverloadedError | None:
        """The overload refusal :meth:`admit` would raise at once now (counted in the
        metrics), or None; takes no slot."""
        subject = identity.subject if identity is not None else ""
        refusal = self.admission.refusal_now(subject, deadline)
        if refusal is not None and self.metrics is not None:
            self.metrics.observe(door, "-", refusal.graphql_code.lower(), 0.0)
        return refusal

    @contextlib.asynccontextmanager
    async def admitted(
        self, identity: Identity | None, deadline: float | None, door: str, *, patient: bool = False
    ) -> AsyncIterator[None]:
        """Hold a slot for the body of the ``with`` (:meth:`run` inside takes none)."""
        ticket = await self.admit(identity, deadline, door, patient=patient)
        with self.holding(ticket):
            yield

    @contextlib.contextmanager
    def holding(self, ticket: Ticket) -> Iterator[None]:
        """The body of the ``with`` runs in the slot of ``ticket``, given back at its end."""
        token = ADMITTED.set(True)
        try:
            yield
        finally:
            ADMITTED.reset(token)
            self.admission.release(ticket)

    def authorize(self, identity: Identity | None, endpoint: str, door: str) -> None:
        """Refuse ``identity`` for ``endpoint`` without its scope (doors call this before
        they build a request, so that a refused caller costs nothing more)."""
        if self.auth is None:
            return
        try:
            self.auth.authorize(identity, endpoint, door=door)
        except RequestError as exc:
            if self.metrics is not None:
                self.metrics.observe(door, endpoint or "/", exc.graphql_code.lower(), 0.0)
            raise

    async def identify(self, authorization: str | None, door: str) -> Identity | None:
        """The verified identity behind an ``Authorization`` value; None without auth."""
        if self.auth is None:
            return None
        return await self.auth.authenticate_async(authorization, door=door)

    async def post(self, data: bytes, context: _Context) -> bytes:
        try:
            identity = await self.identify(_authorization(context), "grpc")
            return await self.run(data, _deadline(context), identity, door="grpc")
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def post_after_auth(self, requests: AsyncIterator[bytes], context: _Context) -> bytes:
        """``Post`` when the Flow checks tokens: the token first, then the one message."""
        try:
            identity = await self.identify(_authorization(context), "grpc")
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises
        data = None
        async for message in requests:
            if data is not None:
                await context.abort(grpc_status(BadRequestError), "Post takes one request")
            data = message
        if data is None:
            await context.abort(grpc_status(BadRequestError), "Post got no request")
            raise AssertionError("unreachable: abort raises")
        try:
            return await self.run(data, _deadline(context), identity, door="grpc")
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    async def stream(
        self, requests: AsyncIterator[bytes], context: _Context
    ) -> AsyncIterator[bytes]:
        deadline = _deadline(context)
        try:
            identity = await self.identify(_authorization(context), "grpc")
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

        async def one(data: bytes) -> bytes:
            return await self._run(data, deadline, identity, "grpc")

        async def admit() -> Ticket:
            return await self.admit(identity, deadline, "grpc", patient=True)

        answers = fan_out(
            requests, one, _stream_failure, admit=admit, release=self.admission.release
        )
        async with contextlib.aclosing(answers):
            async for answer in answers:
                yield answer

    async def _run(
        self, data: bytes, deadline: float | None, identity: Identity | None, door: str
    ) -> bytes:
        try:
            head = data_request_pb2.DataRequestHead.FromString(data)
        except DecodeError:
            raise BadRequestError("the request is not a valid meshflow.v1.DataRequest") from None
        header = head.header
        request_id = header.request_id
        if not request_id:
            request_id = uuid.uuid4().hex
            # Concatenated messages merge: this sets header.request_id, the rest stays as sent.
            data += data_request_pb2.DataRequest(
                header=data_request_pb2.Header(request_id=request_id)
            ).SerializeToString()
        endpoint = header.endpoint or "/"
        if self.tracing:
            _annotate_span(request_id, endpoint, door)
        started = time.perf_counter()
        status = "ok"
        try:
            if header.HasField("voucher"):
                data = _without_voucher(data)  # only the gateway says who the caller is
            if self.auth is not None:
                self.auth.authorize(identity, endpoint, door=door)
                assert identity is not None  # authorize refuses a request without one
                assert self.signer is not None  # __init__ refuses auth without a signer
                data += self.signer.header_bytes(request_id, identity)
            answer = await self.traversal.run(
                data, header.endpoint, deadline, pushdown=bool(header.fields)
            )
            failure = data_request_pb2.DataRequestHead.FromString(answer).status
            if failure.code != data_request_pb2.Status.OK:
                status = "executor_error"
            return answer
        except RequestError as exc:
            status = exc.graphql_code.lower()
            raise
        except Exception as exc:
            status = RequestError.graphql_code.lower()
            raise internal_error(exc, "gateway", endpoint, "routing the request") from exc
        except BaseException:
            status = "cancelled"
            raise
        finally:
            seconds = time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.observe(door, endpoint, status, seconds)
            if access.isEnabledFor(logging.INFO):
                trace_id = current_trace_id() if self.tracing else None
                access.info(
                    "%s %s %s %s %.2f ms",
                    request_id,
                    door or "grpc",
                    endpoint,
                    status,
                    seconds * 1e3,
                    extra={
                        "request_id": request_id,
                        "door": door or "grpc",
                        "endpoint": endpoint,
                        "status": status,
                        "duration_ms": round(seconds * 1e3, 3),
                        "trace_id": trace_id,
                    },
                )


def _annotate_span(request_id: str, endpoint: str, door: str) -> None:
    """Name the endpoint on the door's span (the gRPC server span or the GraphQL operation)."""

    span = trace.get_current_span()
    span.set_attribute("meshflow.endpoint", endpoint)
    span.set_attribute("meshflow.request_id", request_id)
    span.set_attribute("meshflow.door", door or "grpc")


async def _abort(context: _Context, exc: Exception) -> None:
    """End the call with the status of ``exc``: a :class:`RequestError`'s own code, and
    ``INTERNAL`` naming the step for anything else (never gRPC's ``UNKNOWN``)."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the call was already ended with its status
    if not isinstance(exc, RequestError):
        exc = internal_error(exc, "gateway", "", "reading the call")
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, ForbiddenError) and exc.scope:
        trailers = ((MISSING_SCOPE, exc.scope),)
    if isinstance(exc, OverloadedError):
        # A retry that cannot fit the call's deadline is not asked for: a negative pushback
        # tells gRPC clients not to retry (gRFC A6), so the caller hears the refusal now.
        left = context.time_remaining()
        fits = left is None or exc.retry_after < left
        pushback = str(math.ceil(exc.retry_after * 1000)) if fits else "-1"
        trailers = ((RETRY_PUSHBACK, pushback),)
    await context.abort(grpc_status(exc), str(exc), trailers)


def _deadline(context: _Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _authorization(context: _Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _without_voucher(data: bytes) -> bytes:
    request = data_request_pb2.DataRequest.FromString(data)
    request.header.ClearField("voucher")
    return request.SerializeToString()


def _stream_failure(data: bytes, exc: Exception) -> bytes:
    """The answer on a stream for a request whose run raised ``exc``."""
    if not isinstance(exc, RequestError):
        exc = internal_error(exc, "gateway", "", "streaming")
    return _failure(data, exc)


def _failure(data: bytes, exc: RequestError) -> bytes:
    """An answer on a stream for a request that failed at the gateway itself."""
    try:
        head = data_request_pb2.DataRequestHead.FromString(data)
        header = head.header
    except DecodeError:
        header = data_request_pb2.Header()
    answer = data_request_pb2.DataRequest(
        header=header,
        status=data_request_pb2.Status(
            code=data_request_pb2.Status.ERROR,
            message=str(exc),
            executor="gateway",
            endpoint=header.endpoint or "/",
            exception_type=type(exc).__name__,
        ),
    )
    if isinstance(exc, ForbiddenError) and exc.scope:
        # The status has no field for it: the gateway's own results (no executor can be
        # named 'gateway') carry the missing scope.
        answer.results["gateway"].update({"missing_scope": exc.scope})
    return answer.SerializeToString()
