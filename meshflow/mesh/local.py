"""The mesh of a Flow running as local processes, seen from the runtime that starts them.

:class:`~meshflow.flow.local.LocalRuntime` starts executors and the gateway the same way for
every mesh and asks a :class:`LocalMesh` for the rest: the sidecar (if any) in front of each
replica, what the gateway dials, when the mesh routes to every replica, and how replicas join
and leave while the Flow runs.

- :class:`DirectMesh` (``mesh='direct'``) adds nothing: the gateway calls the executors'
  sockets itself, and the Flow is ready when its processes are.
- :class:`~meshflow.mesh.local_envoy.EnvoyMesh` (``mesh='envoy'``) puts an ingress Envoy
  (mTLS on a unix socket) in front of each replica and an egress Envoy beside the gateway,
  holds the Flow's ephemeral CA, writes the endpoint (EDS) files, and is ready when the gateway's
  sidecar sees every replica healthy.
- :class:`~meshflow.mesh.local_envoy.HostEnvoyMesh` (``envoy_proxy='host'``) runs the same
  listeners and clusters in one Envoy for the whole Flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from meshflow.mesh.sidecar import EnvoyProcess
    from meshflow.spec.flow import DeploymentSpec, FlowSpec


@dataclass
class Ingress:
    """A replica's door into the mesh: the unix socket of its mTLS listener, in its own
    sidecar or (``envoy_proxy='host'``, ``sidecar`` None) in the Flow's one Envoy."""

    deployment: str
    shard: int
    sidecar: EnvoyProcess | None
    socket: str


class LocalMesh(Protocol):
    """What a local Flow's runtime asks of its mesh."""

    scalable: bool
    """Whether replicas can join and leave a running Flow (someone must balance them)."""
    waiting_for: str
    """What :meth:`ready` waits for, in words (for the error when it never is)."""

    def prepare(self) -> None:
        """Make what the mesh needs before any process starts (folders, certificates)."""

    def join(
        self, dep: DeploymentSpec, shard: int, label: str, where: str, socket: str
    ) -> Ingress | None:
        """The sidecar (not started) in front of a replica listening on ``socket``."""

    def gateway_sidecar(self) -> tuple[str | None, EnvoyProcess | None]:
        """What the gateway dials (None: the executors' own sockets) and its sidecar."""

    def ready(self) -> bool:
        """True when the gateway reaches every replica that joined (once processes run)."""

    def admit(self, members: Sequence[Ingress]) -> None:
        """Route to new, running replicas; return when the gateway reaches them."""

    def retire(self, members: Sequence[Ingress]) -> None:
        """Stop routing to replicas; return when no new call goes to them."""


class DirectMesh:
    """``mesh='direct'``: no sidecars; the gateway calls the executors' sockets."""

    scalable = False
    waiting_for = "the Flow's processes"

    def prepare(self) -> None:
        pass

    def join(
        self, dep: DeploymentSpec, shard: int, label: str, where: str, socket: str
    ) -> Ingress | None:
        return None

    def gateway_sidecar(self) -> tuple[str | None, EnvoyProcess | None]:
        return None, None

    def ready(self) -> bool:
        return True

    def admit(self, members: Sequence[Ingress]) -> None:
        pass

    def retire(self, members: Sequence[Ingress]) -> None:
        pass


def local_mesh(spec: FlowSpec, run_dir: str, log_dir: str) -> LocalMesh:
    """The mesh ``spec.mesh`` names, for a Flow whose private files go to ``run_dir``."""
    if spec.mesh == "direct":
        return DirectMesh()
    # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
    from meshflow.mesh.local_envoy import EnvoyMesh, HostEnvoyMesh

    if spec.envoy_proxy == "host":
        return HostEnvoyMesh(spec, run_dir, log_dir)
    return EnvoyMesh(spec, run_dir, log_dir)
