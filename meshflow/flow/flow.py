"""The Flow: a graph of Executors behind one gateway, run as local processes."""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import threading
from collections.abc import Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any

from meshflow.client.client import Client, Posting
from meshflow.errors import ConfigError
from meshflow.executor.executor import check_replicas
from meshflow.flow.deployment import make_deployment
from meshflow.flow.local import LocalRuntime
from meshflow.flow.status import scrape_targets, snapshot, with_health
from meshflow.gateway.doctypes import check_flow as check_typed_documents
from meshflow.gateway.topology import GATEWAY, check_spec
from meshflow.observability.tracing import (
    parse_sampling,
    tracing_requested,
    warn_if_no_collector,
)
from meshflow.spec.batching import DynamicBatching
from meshflow.spec.flow import DeploymentSpec, FlowSpec, coerced
from meshflow.spec.policy import CircuitBreaker, HealthCheck, OutlierDetection, RetryPolicy

log = logging.getLogger("meshflow.flow")


class Flow(Posting):
    """A graph of Executors served behind one gateway.

    ::

        f = Flow().add(uses=Encoder).add(uses=Indexer, shards=2, polling={'/search': 'ALL'})
        with f:
            f.post('/index', docs)
            matches = f.post('/search', queries)

    ``with f:`` starts the gateway and every executor replica as processes, in parallel, and
    returns when all of them serve; leaving the block (or Ctrl-C, or a failed start) stops them.

    Args:
        port: the gateway's gRPC port; None picks a free one (``f.port`` after start).
        name: the Flow's name (workspace folder, identities).
        mesh: ``'envoy'``: every replica behind an Envoy sidecar (mTLS, retries, health
            checks, load balancing); ``'direct'``: the gateway calls executors itself.
        host: the interface the gateway binds; loopback by default.
        workspace: root folder of the executors' workspaces.
        timeout_ready: seconds to wait for every process to serve.
        max_in_flight: the most requests the gateway runs at once (the ceiling of its
            adaptive limit).
        admission: :class:`~meshflow.AdmissionPolicy` (adaptive in-flight limit, the queue of
            waiting requests and how long they may wait, each caller's share): past them a
            request is refused at once with 503 / ``RESOURCE_EXHAUSTED`` and a retry hint.
        max_request_bytes: the largest request the gateway accepts.
        graphql: serve GraphQL over HTTP beside gRPC (``f.graphql_url``).
        graphql_port: its port; None picks a free one.
        graphql_limits: :class:`~meshflow.GraphQLLimits` (depth, aliases, tokens, body size,
            documents per request).
        persisted_queries: :class:`~meshflow.PersistedQueries`: Apollo's automatic persisted
            queries (the default), a safelist of a manifest's operations for production, or
            off; and the ``Cache-Control`` of persisted queries sent with GET.
        federation: :class:`~meshflow.Federation`: serve the GraphQL door as an Apollo
            Federation 2 subgraph, typed documents as entities resolved by id through
            read-only endpoints (see ``docs/graphql.md``).
        envoy_concurrency: worker threads of each Envoy sidecar (``--concurrency``).
        envoy_proxy: with ``mesh='envoy'``: ``'sidecar'`` (the default) runs an Envoy beside
            each replica and one beside the gateway; ``'host'`` runs one Envoy for the whole
            local Flow with the same listeners, clusters and mTLS (Istio's ambient mode, one
            proxy per node): less CPU per call and less memory, but one Envoy's restart
            pauses every call (see ``docs/mesh.md``).
        fork_server: start the gateway and the executors (those on this interpreter) by
            forking them from one process that imported what they all load, so that they
            share those pages (less memory, faster start); False starts each one fresh.
            Linux only; a restarted process always starts fresh (see ``docs/flow.md``).
        auth: :class:`~meshflow.JWTAuth`: every door of the gateway checks a JWT and the
            endpoint's scope (see ``docs/auth.md``); ``f.token`` is what ``f.post`` sends.
        metrics: Prometheus ``/metrics`` on the gateway and every executor; sidecars serve
            ``/stats/prometheus``; ``f.describe()['scrape_targets']`` lists them all.
        tracing: OpenTelemetry spans from the gateway, the executors and the sidecars,
            exported over OTLP/gRPC to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default
            ``http://127.0.0.1:4317``, Jaeger's). The gateway decides which requests are
            traced and the rest of the trace follows: True traces up to 10 new requests a
            second (every request at low traffic, a bounded number under load); a rate
            such as ``'50/s'`` sets that limit; a number in (0, 1] traces that share of
            requests (``1.0``: every request). Setting the variable also turns tracing on.
        log_format: ``'text'`` or ``'json'`` (one JSON object per line) for every process.
        static: static files the gateway's HTTP door serves, URL prefix -> folder, e.g.
            ``{'/ui': 'web'}`` (a web page for the GraphQL API). Served without a token;
            dotfiles and hidden folders are never served.
        cors: origins (``'https://shop.example'``) whose web pages may call the HTTP door
            and open its WebSocket; none by default (same-origin pages and non-browser
            clients always may).
        log_dir: keep the processes' logs there (default: a temporary folder, removed on exit).
    """

    def __init__(self, **options: Any) -> None:
        spec = FlowSpec.build(**options)
        if not isinstance(spec.tracing, bool):
            try:
                parse_sampling(spec.tracing)
            except ValueError:
                raise ConfigError(
                    f"tracing must be true, false, the share of requests to trace (0 to 1] "
                    f"or a rate such as '10/s', got {spec.tracing!r}"
                ) from None
        self._spec = spec
        self._token: str | None = None
        self._runtime: LocalRuntime | None = None
        self._client: Client | None = None

    # The spec's options read (and, before start, write) as the Flow's own: f.mesh, f.metrics.

    def __getattr__(self, name: str) -> Any:
        if name in _OPTIONS and "_spec" in self.__dict__:
            return getattr(self.__dict__["_spec"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _OPTIONS:
            changes = coerced(FlowSpec, {name: value})
            object.__setattr__(self, "_spec", dataclasses.replace(self._spec, **changes))
        else:
            object.__setattr__(self, name, value)

    @property
    def spec(self) -> FlowSpec:
        """What this Flow is, as one frozen :class:`~meshflow.spec.flow.FlowSpec` (with the
        ports it bound once started)."""
        return self._spec

    # -- building -----------------------------------------------------------------------

    def add(
        self,
        uses: Any,
        *,
        name: str | None = None,
        uses_with: Mapping[str, Any] | None = None,
        replicas: int = 1,
        shards: int = 1,
        needs: str | Sequence[str] | None = None,
        polling: str | Mapping[str, str] = "ANY",
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        lb: str = "least_request",
        retries: RetryPolicy | Mapping[str, Any] | None = None,
        health_check: HealthCheck | Mapping[str, Any] | None = None,
        outlier_detection: OutlierDetection | Mapping[str, Any] | None = None,
        circuit_breaker: CircuitBreaker | Mapping[str, Any] | None = None,
        uses_dynamic_batching: Mapping[str, DynamicBatching | Mapping[str, Any]] | None = None,
        gpus: int = 0,
        devices: Sequence[str] | None = None,
        sync_workers: int = 1,
        sync_calls: str = "auto",
    ) -> Flow:
        """Add a deployment of the Executor ``uses`` and return the Flow, to chain calls.

        Args:
            uses: an Executor class, ``'pkg.module:Class'``, ``'file.py:Class'`` or
                ``'executor.yml'``.
            name: unique deployment name (default ``executor<i>``).
            uses_with: keyword arguments of the Executor's constructor.
            replicas: copies of each shard that share the load.
            shards: partitions of the deployment.
            needs: deployments (or ``'gateway'``) whose output this one takes; default the
                one added before. Several names make a join that merges by document id.
            polling: ``'ANY'`` (one shard gets a request), ``'ALL'`` (every shard; matches
                reduced by score, results by the endpoint's ``reduce`` rules), ``'ID'`` (each
                document to the shard owning its id; no documents: every shard) or per
                endpoint, e.g. ``{'/index': 'ID', '/search': 'ALL', '*': 'ANY'}``.
            timeout: default deadline in seconds of each call to this deployment.
            env: extra environment variables of its processes.
            lb: how the mesh spreads calls over replicas: ``'least_request'`` (default),
                ``'round_robin'`` or ``'random'``.
            retries: :class:`~meshflow.RetryPolicy` (default: 3 attempts on connection
                failures, resets and UNAVAILABLE, each on another replica).
            health_check: :class:`~meshflow.HealthCheck` (active gRPC health checks).
            outlier_detection: :class:`~meshflow.OutlierDetection` (eject failing replicas).
            circuit_breaker: :class:`~meshflow.CircuitBreaker` (limits on calls in flight).
            uses_dynamic_batching: per endpoint, a :class:`~meshflow.DynamicBatching` (or a
                mapping of its fields): concurrent requests to it share one call of the
                method, in each replica; wins over the method's ``@dynamic_batching``, e.g.
                ``{'/encode': {'preferred_batch_size': 16, 'timeout': 'auto'}}``.
            gpus: accelerators per replica: the replicas take devices in turn from
                ``devices`` (or the Flow process's ``CUDA_VISIBLE_DEVICES``), and each sees
                only its own through ``CUDA_VISIBLE_DEVICES``; exports request
                ``nvidia.com/gpu``. ``env={'CUDA_VISIBLE_DEVICES': 'RR'}`` (Jina's) is
                ``gpus=1``.
            devices: device ids to spread the replicas over, e.g. ``['0', '1']``.
            sync_workers: threads of each replica for its sync endpoint methods (one: the
                executor's state is never touched by two threads at once).
            sync_calls: where sync endpoint methods run: ``'auto'`` (a first call in a
                worker thread, then on the event loop while calls stay short) or
                ``'thread'`` (always the worker threads); see ``docs/wire.md``.
        """
        if self._runtime is not None:
            raise ConfigError("cannot add deployments to a running Flow; stop it first")
        names = [d.name for d in self._spec.deployments]
        name = name if name is not None else f"executor{len(names)}"
        if name in names:
            raise ConfigError(f"two deployments are named {name!r}; names must be unique")
        if needs is None:
            needs = names[-1] if names else GATEWAY
        dep = make_deployment(
            uses=uses,
            name=name,
            uses_with=uses_with,
            replicas=replicas,
            shards=shards,
            needs=needs,
            polling=polling,
            timeout=timeout,
            env=env,
            lb=lb,
            retries=retries,
            health_check=health_check,
            outlier_detection=outlier_detection,
            circuit_breaker=circuit_breaker,
            uses_dynamic_batching=uses_dynamic_batching,
            gpus=gpus,
            devices=devices,
            sync_workers=sync_workers,
            sync_calls=sync_calls,
        )
        self._spec = self._spec.with_deployment(dep)
        return self

    @property
    def deployments(self) -> list[DeploymentSpec]:
        return list(self._spec.deployments)

    @property
    def port(self) -> int | None:
        """The gateway's gRPC port: as configured, or the one it bound once started."""
        return self._spec.port

    @property
    def graphql_port(self) -> int | None:
        """The gateway's HTTP (GraphQL) port: as configured, or the one it bound."""
        return self._spec.graphql_port

    @property
    def graphql_url(self) -> str:
        """Where the running Flow answers GraphQL, e.g. ``http://127.0.0.1:8080/graphql``."""
        self._running()
        if not self._spec.graphql or self.graphql_port is None:
            raise ConfigError("this Flow serves no GraphQL (Flow(graphql=False))")
        return f"http://{self._spec.host}:{self.graphql_port}/graphql"

    def check(self) -> None:
        """Validate the graph (unknown needs, cycles) and the executors' typed documents
        (one shape per type name) without starting anything."""
        check_spec(self._spec)
        check_typed_documents(self._spec)

    # -- running ------------------------------------------------------------------------

    def deployment(self, name: str) -> DeploymentSpec:
        """The deployment called ``name``."""
        return self._spec.deployment(name)

    def start(self) -> Flow:
        """Start every process in parallel and return when all serve."""
        if self._runtime is not None:
            raise ConfigError("the Flow is already running")
        self.check()
        spec = self._spec
        if spec.auth is not None:
            from meshflow.gateway.auth import Authenticator

            Authenticator(spec.auth)  # a missing secret or a bad key file fails here, at once
        for label, fixed in (
            ("port", spec.port),
            ("graphql_port", spec.graphql_port if spec.graphql else None),
        ):
            if fixed is not None:
                _check_port_free(spec.host, fixed, label)
        if tracing_requested(bool(spec.tracing)):
            warn_if_no_collector()
        runtime = LocalRuntime(spec)
        port = runtime.start()
        self._spec = dataclasses.replace(spec, port=port, graphql_port=runtime.graphql_port)
        self._runtime = runtime
        log.info("Flow %r ready: gateway on %s:%d", spec.name, spec.host, port)
        return self

    def close(self) -> None:
        """Stop every process of the Flow and remove its temporary files."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._runtime is not None:
            self._runtime.stop()
            self._runtime = None

    def __enter__(self) -> Flow:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_runtime", None) is not None:
            self.close()

    def _running(self) -> LocalRuntime:
        if self._runtime is None:
            raise ConfigError("the Flow is not running; use `with f:` or f.start() first")
        return self._runtime

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running processes, by process name."""
        if self._runtime is None:
            return {}
        return {p.name: p.pid for p in self._runtime.processes() if p.popen is not None}

    def log_tail(self, process: str, lines: int = 25) -> str:
        """The last lines of a running process's log (``'gateway'`` or a deployment's)."""
        for proc in self._running().processes():
            if proc.name == process or proc.name.startswith(f"executor {process!r}"):
                return proc.log_tail(lines)
        raise KeyError(process)

    def scale(self, name: str, *, replicas: int) -> None:
        """Run ``replicas`` replicas (per shard) of deployment ``name`` from now on.

        New replicas take traffic once they pass health checks; removed ones stop taking new
        requests first, finish those they hold, then exit. Needs ``mesh='envoy'``.
        """
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ConfigError(f"replicas must be a whole number >= 1, got {replicas!r}")
        runtime = self._running()
        dep = self._spec.deployment(name)
        check_replicas(dep.executor_class, replicas, deployment=name)
        runtime.scale(name, replicas)
        self._spec = self._spec.with_deployment(dataclasses.replace(dep, replicas=replicas))

    def describe(self) -> dict[str, Any]:
        """Every process of the running Flow and its health, as a JSON-like dict.

        ``gateway``: address, pid, sidecar (pid, listener, admin address, config file);
        ``deployments[].replicas[]``: shard, replica, executor (pid, address, alive, serving),
        sidecar (pid, listener, admin, ready) and ``healthy``: whether traffic reaches it.
        ``meshflow status`` prints the same for a Flow running in another process.
        ``scrape_targets``: every Prometheus endpoint (gateway, executors with
        ``metrics=True``, sidecars) with its component, deployment, shard and replica.
        """
        data = with_health(snapshot(self._running()))
        data["scrape_targets"] = scrape_targets(data)
        return data

    def block(self) -> None:
        """Serve until SIGINT (Ctrl-C) or SIGTERM."""
        self._running()
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    # -- requests -----------------------------------------------------------------------

    def _blocking_client(self) -> Client:
        return self.client

    @property
    def token(self) -> str | None:
        """The JWT ``f.post`` and ``f.client`` send, for a Flow with ``auth``."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Client:
        """A :class:`Client` connected to this Flow's gateway."""
        self._running()
        assert self.port is not None
        if self._client is None:
            self._client = Client(self._spec.host, self.port, token=self._token)
        return self._client

    # -- configuration files --------------------------------------------------------------

    @classmethod
    def load_config(cls, path: str, *, port: int | None = None, **overrides: Any) -> Flow:
        """Build a Flow from a YAML file (see ``docs/flow.md``, YAML); ``port`` overrides its
        gateway port, keyword arguments any of its ``with:`` options, e.g.
        ``Flow.load_config('flow.yml', workspace='/data', graphql_port=0)``."""
        # lazy: flow/config.py builds Flows from YAML, so it imports this module
        from meshflow.flow.config import load_flow

        return load_flow(path, port=port, overrides=overrides)

    def to_docker_compose_yaml(self, path: str) -> list[str]:
        """Write this Flow as a docker-compose file at ``path`` (Envoy and Prometheus files
        next to it, see ``docs/deploy.md``); return the files written."""
        # lazy: keeps `import meshflow` cheap: the exporters cost ~25 ms
        from meshflow.deploy import export_compose

        return export_compose(self.spec, path)

    def to_kubernetes_yaml(self, directory: str, **options: Any) -> list[str]:
        """Write this Flow as Kubernetes manifests (with ``kustomization.yaml``) into
        ``directory``; ``options``: ``namespace``, ``cert_manager``, ``hpa``,
        ``ingress_host``. See ``docs/deploy.md``."""
        # lazy: keeps `import meshflow` cheap: the exporters cost ~25 ms
        from meshflow.deploy import export_kubernetes

        return export_kubernetes(self.spec, directory, **options)

    def save_config(self, path: str) -> None:
        """Write this Flow as YAML that :meth:`load_config` reads back."""
        # lazy: flow/config.py builds Flows from YAML, so it imports this module
        from meshflow.flow.config import save_flow

        save_flow(self.spec, path)

    def __repr__(self) -> str:
        state = f"running on port {self.port}" if self._runtime else "stopped"
        return f"<Flow {self._spec.name!r} ({len(self._spec.deployments)} deployments, {state})>"


def _check_port_free(host: str, port: int, label: str = "port") -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # As the servers themselves bind (gRPC, uvicorn): the connections a Flow that just
        # stopped left in TIME_WAIT do not hold the port, only a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ConfigError(
                f"{label}={port}: the port is already in use on {host}; choose another or "
                f"leave {label}=None (a free one is picked)"
            ) from None


_OPTIONS = frozenset(f.name for f in dataclasses.fields(FlowSpec)) - {
    "port",
    "graphql_port",
    "deployments",
}
