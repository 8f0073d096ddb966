"""Run the gateway of a Flow as a process: the gRPC door over the traversal engine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace

from meshflow.errors import ConfigError
from meshflow.gateway.server import Gateway
from meshflow.gateway.topology import Topology
from meshflow.gateway.transport import DirectTransport, EnvoyTransport, Transport
from meshflow.gateway.traversal import Traversal
from meshflow.grpc_lifecycle import serve_forever
from meshflow.observability.tracing import shutdown_tracing
from meshflow.spec.admission import AdmissionPolicy
from meshflow.spec.auth import JWTAuth
from meshflow.spec.federation import Federation
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.names import cluster_name
from meshflow.spec.persisted import PersistedQueries
from meshflow.types import DEFAULT_MAX_REQUEST_BYTES
from meshflow.voucher import Signer

if TYPE_CHECKING:
    from meshflow.gateway.httpserver import HttpDoor
    from meshflow.observability.metrics import GatewayMetrics


def make_transport(topology: Topology, mesh: str, egress: str | None = None) -> Transport:
    """The transport for ``mesh``: ``'envoy'`` (through the sidecar at ``egress``) or
    ``'direct'``."""
    if mesh == "direct":
        return DirectTransport({n.name: n.shards for n in topology.nodes})
    if mesh == "envoy":
        if not egress:
            raise ConfigError("mesh='envoy' needs the address of the gateway's sidecar")
        clusters = {
            (n.name, shard): cluster_name(n.name, shard)
            for n in topology.nodes
            for shard in range(len(n.shards))
        }
        return EnvoyTransport(egress, clusters)
    raise ConfigError(f"unknown mesh {mesh!r}; expected 'envoy' or 'direct'")


def _make_gateway(
    topology: Topology,
    mesh: str,
    egress: str | None,
    max_in_flight: int,
    admission: AdmissionPolicy | None,
    auth: JWTAuth | None,
    signer: Signer | None,
    metrics: bool,
    tracing: bool,
) -> tuple[Gateway, Transport, GatewayMetrics | None]:
    """The gateway of ``topology``, its transport to the executors and its metrics."""
    authenticator = None
    if auth is not None:  # lazy: a gateway without auth loads no JWT library (~8 MB)
        from meshflow.gateway.auth import Authenticator

        authenticator = Authenticator(auth)  # bad keys fail here
    if authenticator is not None and signer is None:
        raise ConfigError(
            "serve_gateway(auth=...) needs signer=: the key it vouches for identities with"
        )
    exporter = None
    if metrics:  # lazy: prometheus_client (3.4 MB of imports) only where metrics are on
        from meshflow.observability.metrics import GatewayMetrics

        exporter = GatewayMetrics()
    tracer = trace.get_tracer("meshflow.gateway") if tracing else None
    transport = make_transport(topology, mesh, egress)
    if tracing and isinstance(transport, DirectTransport):
        transport.tracing = True  # with Envoy, the replica's sidecar span tells which one
    gateway = Gateway(
        Traversal(topology, transport, metrics=exporter, tracer=tracer),
        max_in_flight=max_in_flight,
        admission=admission,
        auth=authenticator,
        signer=signer,
        metrics=exporter,
        tracing=tracing,
    )
    return gateway, transport, exporter


def _http_door(
    gateway: Gateway,
    address: tuple[str, int],
    limits: GraphQLLimits | None,
    static: Mapping[str, str] | None,
    cors: tuple[str, ...],
    persisted: PersistedQueries | None = None,
    federation: Federation | None = None,
) -> HttpDoor:
    """The GraphQL (HTTP and WebSocket) door of ``gateway`` on ``address`` (host, port)."""
    # lazy: Strawberry and uvicorn (~200 ms) load only when the GraphQL door is on
    from meshflow.gateway.http import make_app
    from meshflow.gateway.httpserver import HttpDoor

    limits = limits or GraphQLLimits()
    return HttpDoor(
        make_app(gateway, limits, static, cors, persisted, federation),
        *address,
        max_header_bytes=limits.max_header_bytes,
        max_message_bytes=limits.max_body_bytes,
        max_head_seconds=limits.max_head_seconds,
        max_body_seconds=limits.max_body_seconds,
    )


async def serve_gateway(
    topology: Topology,
    *,
    address: str,
    mesh: str = "direct",
    egress: str | None = None,
    ready_file: str | None = None,
    max_in_flight: int = 1024,
    admission: AdmissionPolicy | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    drain_timeout: float = 10.0,
    graphql: tuple[str, int] | None = None,
    limits: GraphQLLimits | None = None,
    persisted: PersistedQueries | None = None,
    federation: Federation | None = None,
    auth: JWTAuth | None = None,
    signer: Signer | None = None,
    static: Mapping[str, str] | None = None,
    cors: tuple[str, ...] = (),
    metrics: tuple[str, int] | None = None,
    tracing: bool = False,
) -> None:
    """Serve ``GatewayService`` for ``topology`` on ``address`` until SIGTERM/SIGINT, and
    GraphQL over HTTP on ``graphql`` (host, port; port 0 picks one) in the same loop; with
    ``auth``, every door checks JWTs and ``signer`` (required then) vouches for the caller's
    identity to the executors; with ``metrics`` (host, port), Prometheus ``/metrics``
    there and on the HTTP door; with ``static`` (URL prefix -> folder), static files on the
    HTTP door; browser pages of the ``cors`` origins may call it; ``persisted``: the
    door's persisted queries (automatic by default); ``federation``: serve as an Apollo
    Federation 2 subgraph; with ``tracing`` (set up by the
    caller), spans per request and per traversal step."""
    gateway, transport, exporter = _make_gateway(
        topology,
        mesh,
        egress,
        max_in_flight,
        admission,
        auth,
        signer,
        metrics is not None,
        tracing,
    )
    door = None
    if graphql is not None:
        door = _http_door(gateway, graphql, limits, static, cors, persisted, federation)

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((gateway.handler(),))

    async def start_http() -> dict[str, Any]:
        info: dict[str, Any] = {}
        if exporter is not None and metrics is not None:
            info["metrics_port"] = exporter.serve(*metrics)
        if door is not None:
            await door.start()
            info["graphql_port"] = door.port
        return info

    async def stop() -> None:
        if door is not None:
            await door.stop()
        await transport.close()
        if exporter is not None:
            exporter.stop()
        if tracing:
            shutdown_tracing()

    await serve_forever(
        register,
        address=address,
        ready_file=ready_file,
        drain_timeout=drain_timeout,
        what="gateway",
        on_stop=stop,
        max_receive=max_request_bytes,
        services=("meshflow.v1.GatewayService",),
        also_start=start_http,
    )
