"""``mesh='envoy'`` for a local Flow: sidecars, the Flow's CA, endpoint files, readiness.

Each replica gets an ingress Envoy that terminates mTLS on a unix socket (mode 0600) and
forwards to the executor's unix socket, accepting only the gateway's SPIFFE identity. The
gateway gets an egress Envoy on a unix socket with one cluster per shard, whose members come
from an endpoint (EDS) file per cluster: rewriting the file moves traffic without a restart.
The CA is ephemeral: its key lives in this process only; certificates go to the run folder,
never to the workspace executors are handed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from meshflow.errors import ConfigError
from meshflow.mesh.admin import admin_get, healthy_hosts, listener_names
from meshflow.mesh.certs import FlowCA
from meshflow.mesh.config import (
    Admin,
    ClusterSpec,
    HostReplica,
    Tracing,
    endpoints,
    gateway_sidecar,
    host_clusters,
    host_envoy,
    host_listeners,
    replica_sidecar,
    shard_cluster,
    write_yaml,
)
from meshflow.mesh.local import Ingress
from meshflow.mesh.sidecar import EnvoyProcess
from meshflow.observability.tracing import otlp_endpoint
from meshflow.spec.flow import DeploymentSpec, FlowSpec
from meshflow.spec.names import cluster_name

MAX_SOCKET_PATH = 107
"""Bytes of a unix socket's path (``sun_path`` holds 108 with the terminating NUL)."""


class EnvoyMesh:
    """The sidecars of one local Flow and the files they read."""

    scalable = True
    waiting_for = "the gateway's sidecar (waiting for every replica to pass health checks)"

    def __init__(self, spec: FlowSpec, run_dir: str, log_dir: str) -> None:
        self.spec = spec
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.ca: FlowCA | None = None
        self.members: list[Ingress] = []
        self.gateway: EnvoyProcess | None = None
        self._eds_version = 0
        self._published = False
        self._joins = 0

    def prepare(self) -> None:
        os.makedirs(os.path.join(self.run_dir, "eds"), exist_ok=True)
        # Envoy's admin has no authentication: its socket (0600) sits in a folder only the
        # Flow's user can enter (the run folder is 0700 too).
        os.makedirs(self._admin_dir, mode=0o700, exist_ok=True)
        self.ca = FlowCA(os.path.join(self.run_dir, "pki"), self.spec.name, ephemeral=True)

    def join(self, dep: DeploymentSpec, shard: int, label: str, where: str, socket: str) -> Ingress:
        assert self.ca is not None
        config_path = os.path.join(self.run_dir, f"{label}.envoy.yaml")
        admin = self._admin(label)
        listen = self._listen_socket(label)
        write_yaml(
            config_path,
            replica_sidecar(
                node=label,
                listen_port=None,
                listen_socket=listen,
                executor_socket=socket,
                identity=self.ca.identity(dep.name),
                allowed_peers=[self.ca.identity("gateway").spiffe_id],
                admin=admin,
                tracing=self._tracing(f"sidecar {label}"),
            ),
        )
        sidecar = EnvoyProcess(
            name=f"sidecar of {where}",
            config_path=config_path,
            log_path=os.path.join(self.log_dir, f"{label}.envoy.log"),
            admin_socket=admin.socket,
            label=label,
            concurrency=self.spec.envoy_concurrency,
        )
        member = Ingress(dep.name, shard, sidecar, socket=listen)
        self.members.append(member)
        return member

    def _listen_socket(self, label: str) -> str:
        """A replica's mTLS listener. A unix socket rather than loopback TCP: a call crosses
        no TCP stack (sidecar_topology_bench.py: 5-14% more calls/s), and only the Flow's
        user can connect at all. A replica joining later under the same label (scale down,
        then up) gets a socket of its own while the old listener drains. The label is left
        out of a path longer than a unix socket's 107 bytes."""
        self._joins += 1
        path = os.path.join(self.run_dir, f"{label}.{self._joins}.mtls.sock")
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            path = os.path.join(self.run_dir, f"mtls-{self._joins}.sock")
        return path

    # The gateway's Envoy: its name among the Flow's processes, its label (config and log
    # files), and its bootstrap (HostEnvoyMesh: the Flow's one Envoy).
    egress_name = "sidecar of the gateway"
    egress_label = "gateway"

    def gateway_sidecar(self) -> tuple[str, EnvoyProcess]:
        egress_sock = os.path.join(self.run_dir, "gateway-egress.sock")
        config_path = os.path.join(self.run_dir, f"{self.egress_label}.envoy.yaml")
        admin = self._admin("gateway")
        write_yaml(config_path, self._egress_bootstrap(egress_sock, admin))
        self.gateway = EnvoyProcess(
            name=self.egress_name,
            config_path=config_path,
            log_path=os.path.join(self.log_dir, f"{self.egress_label}.envoy.log"),
            admin_socket=admin.socket,
            label=self.egress_label,
            concurrency=self.spec.envoy_concurrency,
        )
        return f"unix:{egress_sock}", self.gateway

    def _egress_bootstrap(self, egress_sock: str, admin: Admin) -> dict[str, Any]:
        assert self.ca is not None
        # Empty at first: a replica joins once it serves, so that the first health check of
        # the gateway's sidecar finds it up (a host that fails that check reaches the
        # sidecar's worker threads only a check interval later).
        self._write_endpoints(published=[])
        return gateway_sidecar(
            node="gateway",
            listen_socket=egress_sock,
            identity=self.ca.identity("gateway"),
            clusters=self._clusters(),
            admin=admin,
            tracing=self._tracing("sidecar gateway"),
        )

    def ready(self) -> bool:
        if not self._published:
            if not all(m.sidecar is not None and m.sidecar.info is not None for m in self.members):
                return False
            self._write_endpoints()
            self._published = True
        return self._routed(self.members)

    def admit(self, members: Sequence[Ingress]) -> None:
        self._write_endpoints()
        self._wait(lambda: self._routed(members), "new replicas to pass health checks")

    def retire(self, members: Sequence[Ingress]) -> None:
        self.members = [m for m in self.members if m not in members]
        self._write_endpoints()
        self._wait(lambda: self._gone(members), "the gateway's sidecar to drop old replicas")

    # -- the files and the admin ------------------------------------------------------------

    def _clusters(self) -> list[ClusterSpec]:
        """The gateway's cluster of every shard, its replicas from an endpoint file."""
        assert self.ca is not None
        return [
            shard_cluster(
                dep,
                shard,
                self.ca.identity(dep.name).spiffe_id,
                eds_path=self._eds_path(cluster_name(dep.name, shard)),
            )
            for dep in self.spec.deployments
            for shard in range(dep.shards)
        ]

    @property
    def _admin_dir(self) -> str:
        return os.path.join(self.run_dir, "admin")

    def _admin(self, label: str) -> Admin:
        return Admin(socket=os.path.join(self._admin_dir, f"{label}.sock"))

    def _tracing(self, service: str) -> Tracing | None:
        return Tracing(service=service, endpoint=otlp_endpoint()) if self.spec.tracing else None

    def _eds_path(self, cluster: str) -> str:
        return os.path.join(self.run_dir, "eds", f"{cluster}.yaml")

    def _write_endpoints(self, published: list[Ingress] | None = None) -> None:
        """(Re)write every cluster's endpoint file: the members, or ``published``."""
        members = self.members if published is None else published
        self._eds_version += 1
        for dep in self.spec.deployments:
            for shard in range(dep.shards):
                cluster = cluster_name(dep.name, shard)
                hosts = [m.socket for m in members if m.deployment == dep.name and m.shard == shard]
                write_yaml(self._eds_path(cluster), endpoints(cluster, hosts, self._eds_version))

    def _routed(self, members: Sequence[Ingress]) -> bool:
        """True when the gateway's sidecar sends traffic to every one of ``members``."""
        address = self.gateway.admin_address if self.gateway is not None else None
        if address is None:
            return False
        hosts = healthy_hosts(address)
        return all(m.socket in hosts.get(cluster_name(m.deployment, m.shard), []) for m in members)

    def _gone(self, members: Sequence[Ingress]) -> bool:
        assert self.gateway is not None and self.gateway.admin_address is not None
        _, body = admin_get(self.gateway.admin_address, "/clusters")
        return not any(f"{m.socket}::" in body for m in members)

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.spec.timeout_ready
        while not condition():
            if time.monotonic() > deadline:
                raise ConfigError(f"timed out waiting for {what}")
            time.sleep(0.05)


class HostEnvoyMesh(EnvoyMesh):
    """``envoy_proxy='host'``: one Envoy for the whole local Flow, as Istio's ambient mode runs
    one proxy per node. It holds the gateway's egress listener and clusters and every
    replica's ingress listener (mTLS with the replica's certificate, only the gateway's
    identity admitted), each on a unix socket, so a call crosses the same listeners, filters
    and TLS as with sidecars, in one process: about 40% less Envoy CPU per call and one Envoy's
    memory instead of one per replica plus one (``benchmarks/sidecar_topology_bench.py``).

    The replicas' listeners and executor clusters come from files the Envoy watches (LDS and
    CDS, as the endpoints come from EDS files): a scaled-up replica's listener and cluster are
    written first, then it joins the endpoints; a leaving one leaves the endpoints first. A
    restarted Envoy comes back on the same sockets.
    """

    waiting_for = "the Flow's Envoy (waiting for every replica to pass health checks)"
    egress_name = "the Flow's Envoy"
    egress_label = "host"

    def __init__(self, spec: FlowSpec, run_dir: str, log_dir: str) -> None:
        super().__init__(spec, run_dir, log_dir)
        self._replicas: dict[str, HostReplica] = {}
        """By listener socket (the members' ``Ingress.socket``)."""
        self._resources_version = 0

    def join(self, dep: DeploymentSpec, shard: int, label: str, where: str, socket: str) -> Ingress:
        assert self.ca is not None
        listen = self._listen_socket(label)
        self._replicas[listen] = HostReplica(
            label=label,
            listen_socket=listen,
            executor_socket=socket,
            identity=self.ca.identity(dep.name),
            allowed_peers=(self.ca.identity("gateway").spiffe_id,),
        )
        member = Ingress(dep.name, shard, None, socket=listen)
        self.members.append(member)
        return member

    def _egress_bootstrap(self, egress_sock: str, admin: Admin) -> dict[str, Any]:
        assert self.ca is not None
        self._write_resources()
        self._write_endpoints()  # the listeners' sockets are known: every replica at once
        return host_envoy(
            node="host",
            listen_socket=egress_sock,
            identity=self.ca.identity("gateway"),
            clusters=self._clusters(),
            admin=admin,
            lds_path=self._resource_path("listeners"),
            cds_path=self._resource_path("clusters"),
            tracing=self._tracing("envoy"),
        )

    def ready(self) -> bool:
        return self._routed(self.members)

    def admit(self, members: Sequence[Ingress]) -> None:
        self._write_resources()
        self._wait(lambda: self._listening(members), "the Flow's Envoy to open new listeners")
        self._write_endpoints()
        self._wait(lambda: self._routed(members), "new replicas to pass health checks")

    def retire(self, members: Sequence[Ingress]) -> None:
        super().retire(members)  # out of the endpoints first: no new call goes to them
        for m in members:
            if m.socket is not None:
                self._replicas.pop(m.socket, None)
        # Removed listeners drain: calls already under way finish.
        self._write_resources()

    def _resource_path(self, kind: str) -> str:
        return os.path.join(self.run_dir, "eds", f"host-{kind}.yaml")

    def _write_resources(self) -> None:
        """(Re)write the replicas' clusters, then their listeners (a listener's route names
        its cluster)."""
        self._resources_version += 1
        replicas = list(self._replicas.values())
        version = self._resources_version
        write_yaml(self._resource_path("clusters"), host_clusters(replicas, version))
        tracing = self._tracing("envoy")
        write_yaml(self._resource_path("listeners"), host_listeners(replicas, version, tracing))

    def _listening(self, members: Sequence[Ingress]) -> bool:
        address = self.gateway.admin_address if self.gateway is not None else None
        if address is None:
            return False
        names = listener_names(address)
        return all(
            f"ingress {self._replicas[m.socket].label}" in names
            for m in members
            if m.socket is not None
        )
