"""Prometheus metrics of the gateway and of each executor (``Flow(metrics=True)``).

Each process keeps its own registry and serves it on ``/metrics`` of a small HTTP server on
loopback (the port goes into its ready file, so the Flow can list every scrape target); the
gateway also answers ``/metrics`` on its HTTP door. Envoy sidecars are scraped on their admin
``/stats/prometheus``.

Executor series, labelled ``deployment`` and ``endpoint``:

- ``meshflow_executor_requests_total`` (also ``status``: ``ok`` / ``error``)
- ``meshflow_executor_errors_total`` (also ``exception``: the exception's type name)
- ``meshflow_executor_request_seconds``: time in the executor, queue included
- ``meshflow_executor_queue_seconds``: waiting before the method ran: for a worker thread,
  and for its batch (0 for async endpoints without batching)
- ``meshflow_executor_processing_seconds``: the endpoint method itself
- ``meshflow_executor_documents_total``
- ``meshflow_executor_requests_in_flight`` (``deployment`` only)
- ``meshflow_executor_batch_size``: documents per call of a batching endpoint
- ``meshflow_executor_batch_requests``: requests one call of a batching endpoint served
- ``meshflow_executor_batch_wait_seconds``: time a request waited in its batch queue

Gateway series, labelled ``door`` (grpc, graphql, websocket, http) and ``endpoint``:

- ``meshflow_gateway_requests_total`` (also ``status``: ``ok`` or the error's GraphQL code)
- ``meshflow_gateway_request_seconds``
- ``meshflow_gateway_requests_in_flight``, ``meshflow_gateway_in_flight_limit`` and
  ``meshflow_gateway_requests_queued`` (no labels): admission (see docs/flow.md, Overload)
- ``meshflow_gateway_hop_seconds`` (``deployment``): each call to an executor, as the gateway
  saw it (sidecars included)

Endpoint names come from callers: past :data:`MAX_ENDPOINTS` distinct values a process labels
the others ``other``, so a client cannot blow up the number of series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.exposition import generate_latest

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_ENDPOINTS = 64


class _Endpoints:
    """Caps the distinct endpoint label values of a process."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, endpoint: str) -> str:
        endpoint = endpoint or "/"
        if endpoint in self.seen:
            return endpoint
        with self._lock:
            if len(self.seen) >= MAX_ENDPOINTS:
                return "other"
            self.seen.add(endpoint)
        return endpoint


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.endpoint = _Endpoints()
        self._server: Any = None

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 picks one) from a thread; return the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound: int = server.server_port
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class ExecutorMetrics(_Metrics):
    """The series of one executor process."""

    def __init__(self, deployment: str, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.deployment = deployment
        r = self.registry
        labels = ("deployment", "endpoint")
        self.requests = Counter(
            "meshflow_executor_requests",
            "Requests an executor served, by status",
            (*labels, "status"),
            registry=r,
        )
        self.errors = Counter(
            "meshflow_executor_errors",
            "Requests whose endpoint raised, by exception type",
            (*labels, "exception"),
            registry=r,
        )
        self.seconds = Histogram(
            "meshflow_executor_request_seconds",
            "Time a request spent in the executor, queue included",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "meshflow_executor_queue_seconds",
            "Time a request waited for a worker thread",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "meshflow_executor_processing_seconds",
            "Time the endpoint method ran",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self.documents = Counter(
            "meshflow_executor_documents",
            "Documents the executor's endpoints processed",
            labels,
            registry=r,
        )
        self.in_flight = Gauge(
            "meshflow_executor_requests_in_flight",
            "Requests inside the executor's endpoints now",
            ("deployment",),
            registry=r,
        ).labels(deployment)
        self.batch_size = Histogram(
            "meshflow_executor_batch_size",
            "Documents per call of a batching endpoint",
            labels,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "meshflow_executor_batch_requests",
            "Requests one call of a batching endpoint served",
            labels,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_wait = Histogram(
            "meshflow_executor_batch_wait_seconds",
            "Time a request waited in its endpoint's batch queue",
            labels,
            buckets=BUCKETS,
            registry=r,
        )
        self._bound: dict[str, tuple[Any, ...]] = {}

    def observe_batch(self, endpoint: str, docs: int, requests: int) -> None:
        """Record one call of a batching endpoint."""
        endpoint = self.endpoint(endpoint)
        self.batch_size.labels(self.deployment, endpoint).observe(docs)
        self.batch_requests.labels(self.deployment, endpoint).observe(requests)

    def observe_batch_wait(self, endpoint: str, seconds: float) -> None:
        """Record how long one request waited for its batch."""
        self.batch_wait.labels(self.deployment, self.endpoint(endpoint)).observe(seconds)

    def observe(
        self,
        endpoint: str,
        *,
        total: float,
        queue: float,
        processing: float,
        docs: int,
        error: str | None,
    ) -> None:
        """Record one request that ran an endpoint."""
        endpoint = self.endpoint(endpoint)
        bound = self._bound.get(endpoint)
        if bound is None:
            key = (self.deployment, endpoint)
            bound = (
                self.requests.labels(*key, "ok"),
                self.seconds.labels(*key),
                self.queue.labels(*key),
                self.processing.labels(*key),
                self.documents.labels(*key),
            )
            self._bound[endpoint] = bound
        ok, seconds, queue_h, processing_h, documents = bound
        if error is None:
            ok.inc()
        else:
            self.requests.labels(self.deployment, endpoint, "error").inc()
            self.errors.labels(self.deployment, endpoint, error).inc()
        seconds.observe(total)
        queue_h.observe(queue)
        processing_h.observe(processing)
        documents.inc(docs)


class GatewayMetrics(_Metrics):
    """The series of the gateway process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.requests = Counter(
            "meshflow_gateway_requests",
            "Requests the gateway answered, by door, endpoint and status",
            ("door", "endpoint", "status"),
            registry=r,
        )
        self.seconds = Histogram(
            "meshflow_gateway_request_seconds",
            "Time from a request's arrival at the gateway to its answer",
            ("door", "endpoint"),
            buckets=BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "meshflow_gateway_requests_in_flight", "Requests the gateway holds now", registry=r
        )
        self.limit = Gauge(
            "meshflow_gateway_in_flight_limit",
            "Requests the gateway runs at once now (its adaptive limit)",
            registry=r,
        )
        self.queued = Gauge(
            "meshflow_gateway_requests_queued",
            "Requests waiting for a slot of the gateway's admission",
            registry=r,
        )
        self.hops = Histogram(
            "meshflow_gateway_hop_seconds",
            "Each call from the gateway to a deployment (its sidecars included)",
            ("deployment",),
            buckets=BUCKETS,
            registry=r,
        )
        self._bound: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._hops: dict[str, Any] = {}

    def observe(self, door: str, endpoint: str, status: str, seconds: float) -> None:
        key = (door or "grpc", self.endpoint(endpoint), status)
        bound = self._bound.get(key)
        if bound is None:
            bound = (self.requests.labels(*key), self.seconds.labels(*key[:2]))
            self._bound[key] = bound
        bound[0].inc()
        bound[1].observe(seconds)

    def hop(self, deployment: str) -> Callable[[float], None]:
        """The ``observe`` of the hop histogram of ``deployment``."""
        observe: Callable[[float], None] | None = self._hops.get(deployment)
        if observe is None:
            observe = self._hops[deployment] = self.hops.labels(deployment).observe
        return observe
