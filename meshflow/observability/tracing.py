"""OpenTelemetry tracing of the gateway and the executors, exported over OTLP/gRPC.

Switched on by ``Flow(tracing=True)`` or by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``;
``OTEL_SDK_DISABLED=true`` turns it off). The exporter, the sampler (``OTEL_TRACES_SAMPLER``)
and the batch processor (``OTEL_BSP_*``) read the other ``OTEL_*`` variables as the SDK
defines them.

Spans of one request, all in one trace (W3C ``traceparent`` between processes):

- the gateway's door: the gRPC server span (``opentelemetry-instrumentation-grpc``) or the
  GraphQL operation (``graphql mutation post``), with the endpoint;
- one client span per traversal step (``call <deployment>``, with shard);
- the Envoy sidecars' spans (egress and ingress), from Envoy's own OpenTelemetry tracer;
- the executor's gRPC server span, and a child span for the endpoint method, where the
  executor's own spans (``self.tracer``) go.

Which requests are traced is the gateway's decision (head sampling; every other process
follows the ``traceparent`` it sends): ``"10/s"`` (:data:`DEFAULT_SAMPLING`, what
``Flow(tracing=True)`` means) traces up to 10 new requests a second, so every request at low
traffic and a bounded number under load, like Jaeger's rate-limiting sampler; ``0.1`` traces
that share of requests; ``1.0`` every request.

With tracing off nothing here is imported and no span object is ever made.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Tracer

DEFAULT_OTLP_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_SAMPLING = "10/s"
"""What ``Flow(tracing=True)`` samples: up to 10 new traces a second."""
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_provider: TracerProvider | None = None
_exporter_shutdown: Callable[[], None] | None = None
log = logging.getLogger("meshflow.tracing")


def tracing_requested(flag: bool = False) -> bool:
    """Whether this process traces: asked for, or an OTLP endpoint in the environment."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return flag or any(os.environ.get(v) for v in _ENDPOINT_VARS)


def otlp_endpoint() -> str:
    """Where spans go: the standard variables, else the local default (Jaeger's OTLP port)."""
    for name in _ENDPOINT_VARS:
        value = os.environ.get(name)
        if value:
            return value
    return DEFAULT_OTLP_ENDPOINT


def warn_if_no_collector(timeout: float = 0.5) -> bool:
    """Log a warning when nothing accepts connections where spans go; True when something
    does. Spans sent nowhere are dropped after retries, so say it once, at start."""
    endpoint = otlp_endpoint()
    parsed = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")
    try:
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 4317
    except ValueError:
        log.warning("tracing is on but the OTLP endpoint %r is not a URL", endpoint)
        return False
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        log.warning(
            "tracing is on but no collector answers at %s (%s): spans will be dropped; start "
            "one (Jaeger: `docker compose up -d jaeger`) or set OTEL_EXPORTER_OTLP_ENDPOINT",
            endpoint,
            exc.strerror or exc,
        )
        return False
    return True


def parse_sampling(value: object) -> tuple[str, float]:
    """A sampling setting as ``("share", 0.1)`` (a share of requests, in (0, 1]) or
    ``("rate", 20.0)`` (``"20/s"``: up to 20 new traces a second); ValueError otherwise."""
    problem = ValueError(
        f"trace sampling must be a share of requests in (0, 1] or a rate such as '10/s', "
        f"got {value!r}"
    )
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise problem
    text = str(value).strip()
    kind, number = ("rate", text[:-2]) if text.endswith("/s") else ("share", text)
    try:
        parsed = float(number)
    except ValueError:
        raise problem from None
    valid = parsed > 0 and math.isfinite(parsed) if kind == "rate" else 0 < parsed <= 1
    if not valid:
        raise problem
    return kind, parsed


def sampling_arg(tracing: bool | float | str) -> str:
    """The gateway's ``--trace-sampling`` for ``Flow(tracing=...)``."""
    kind, value = parse_sampling(DEFAULT_SAMPLING if tracing is True else tracing)
    text = format(value, ".15g")
    return f"{text}/s" if kind == "rate" else text


def make_sampler(sampling: object, clock: Callable[[], float] = time.monotonic) -> Sampler:
    """The gateway's sampler for a sampling setting (see :func:`parse_sampling`): new traces
    by share or by rate; a request that comes with a ``traceparent`` follows its decision."""
    # lazy: keeps `import meshflow` cheap: the OpenTelemetry SDK loads only when tracing is set up
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from meshflow.observability.sampling import RateLimitedSampler

    kind, value = parse_sampling(sampling)
    root = TraceIdRatioBased(value) if kind == "share" else RateLimitedSampler(value, clock)
    return ParentBased(root)


def setup_tracing(
    service: str,
    attributes: dict[str, Any] | None = None,
    sampling: float | str | None = None,
    *,
    instrument_servers: bool = True,
    follow_only: bool = False,
) -> Tracer:
    """Install the SDK's tracer provider with an OTLP/gRPC exporter, instrument grpc.aio
    servers made from now on, and return meshflow's tracer.

    ``sampling``: which new traces are recorded, a share (``0.1``) or a rate (``"10/s"``),
    see :func:`make_sampler`; None leaves it to ``OTEL_TRACES_SAMPLER``.
    ``instrument_servers``: server spans from ``opentelemetry-instrumentation-grpc`` (the
    gateway's gRPC door); executors make theirs in the runtime, without an interceptor.
    ``follow_only``: never start a trace, only continue the caller's (executors: the gateway
    decides which requests are traced).
    """
    global _provider, _exporter_shutdown
    # lazy: keeps `import meshflow` cheap: OpenTelemetry loads only when tracing is used
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer, filters
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    if _provider is None:
        resource = Resource.create({"service.name": service, **(attributes or {})})
        endpoint = otlp_endpoint()
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
        sampler: Sampler | None = None
        if follow_only:
            sampler = ParentBased(ALWAYS_OFF)
        elif sampling is not None:
            sampler = make_sampler(sampling)
        provider = TracerProvider(resource=resource, sampler=sampler)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider
        _exporter_shutdown = exporter.shutdown
        # grpc.aio interceptors put every call on a slower path (measured in
        # benchmarks/observability_bench.py): the hops inside the Flow make their spans and
        # carry traceparent themselves (Traversal, ExecutorRuntime). Health checks (Envoy asks
        # every second) are left out.
        if instrument_servers:
            quiet = filters.negate(filters.health_check())
            GrpcAioInstrumentorServer(filter_=quiet).instrument()  # type: ignore[no-untyped-call]
    return trace.get_tracer("meshflow")


def shutdown_tracing(flush_timeout: float = 2.0) -> None:
    """Export the spans still buffered (on a process's way out), giving up after
    ``flush_timeout`` seconds: an unreachable collector would otherwise hold the exit for the
    exporter's whole retry budget (10 s)."""
    global _provider, _exporter_shutdown
    if _provider is None:
        return
    stop_exporting = _exporter_shutdown

    def give_up() -> None:
        log.warning(
            "the trace collector at %s did not take the last spans within %.0f s; dropped",
            otlp_endpoint(),
            flush_timeout,
        )
        if stop_exporting is not None:
            stop_exporting()  # ends the exporter's retry wait at once

    timer = threading.Timer(flush_timeout, give_up)
    timer.daemon = True
    timer.start()
    try:
        _provider.shutdown()
    finally:
        timer.cancel()
        _provider = None
        _exporter_shutdown = None


def current_trace_id() -> str | None:
    """The hex trace id of the current span if it is recorded, else None (no tracing, not in
    a trace, or a request the sampler left out: its id would lead nowhere)."""
    if _provider is None:
        return None
    # lazy: keeps `import meshflow` cheap: OpenTelemetry loads only when tracing is used
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.trace_flags.sampled else None
