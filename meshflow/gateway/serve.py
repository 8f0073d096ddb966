"""Run the gateway of a Flow as a process: the gRPC door over the traversal engine."""

from __future__ import annotations

import grpc

from meshflow.gateway.server import Gateway
from meshflow.gateway.topology import Topology
from meshflow.gateway.transport import DirectTransport, Transport
from meshflow.gateway.traversal import Traversal
from meshflow.serving import serve_forever

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


def make_transport(topology: Topology, mesh: str) -> Transport:
    """The transport for ``mesh``: today ``'direct'``."""
    if mesh == "direct":
        return DirectTransport({n.name: n.shards for n in topology.nodes})
    raise ValueError(f"unknown mesh {mesh!r}; expected 'direct'")


async def serve_gateway(
    topology: Topology,
    *,
    address: str,
    mesh: str = "direct",
    ready_file: str | None = None,
    max_in_flight: int = 1024,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    drain_timeout: float = 10.0,
) -> None:
    """Serve ``GatewayService`` for ``topology`` on ``address`` until SIGTERM/SIGINT."""
    transport = make_transport(topology, mesh)
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
