"""Run the gateway of a Flow as a process: the gRPC door over the traversal engine."""

from __future__ import annotations

import grpc

from meshflow.gateway.server import Gateway
from meshflow.gateway.topology import Topology, cluster_name
from meshflow.gateway.transport import DirectTransport, EnvoyTransport, Transport
from meshflow.gateway.traversal import Traversal
from meshflow.serving import serve_forever

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


def make_transport(topology: Topology, mesh: str, egress: str | None = None) -> Transport:
    """The transport for ``mesh``: ``'envoy'`` (through the sidecar at ``egress``) or
    ``'direct'``."""
    if mesh == "direct":
        return DirectTransport({n.name: n.shards for n in topology.nodes})
    if mesh == "envoy":
        if not egress:
            raise ValueError("mesh='envoy' needs the address of the gateway's sidecar")
        clusters = {
            (n.name, shard): cluster_name(n.name, shard)
            for n in topology.nodes
            for shard in range(len(n.shards))
        }
        return EnvoyTransport(egress, clusters)
    raise ValueError(f"unknown mesh {mesh!r}; expected 'envoy' or 'direct'")


async def serve_gateway(
    topology: Topology,
    *,
    address: str,
    mesh: str = "direct",
    egress: str | None = None,
    ready_file: str | None = None,
    max_in_flight: int = 1024,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    drain_timeout: float = 10.0,
) -> None:
    """Serve ``GatewayService`` for ``topology`` on ``address`` until SIGTERM/SIGINT."""
    transport = make_transport(topology, mesh, egress)
    gateway = Gateway(Traversal(topology, transport), max_in_flight=max_in_flight)

    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((gateway.handler(),))

    await serve_forever(
        register,
        address=address,
        ready_file=ready_file,
        drain_timeout=drain_timeout,
        what="gateway",
        on_stop=transport.close,
        max_receive=max_request_bytes,
        services=("meshflow.v1.GatewayService",),
    )
