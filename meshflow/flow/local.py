"""Running a Flow as local processes: executors, their sidecars, the gateway and its sidecar.

Everything starts at once. Executors listen on unix sockets in a private temporary
directory. With ``mesh='envoy'`` each replica gets an ingress Envoy (mTLS, loopback TCP) in
front of its socket and the gateway reaches them only through its own egress Envoy; with
``mesh='direct'`` the gateway calls the sockets itself. The Flow is ready when every process
is, and (with Envoy) when the gateway's sidecar sees every replica healthy. A
:class:`~meshflow.processes.Supervisor` restarts whatever exits on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cloudpickle

from meshflow.errors import ConfigError
from meshflow.flow.status import file_sd, snapshot, write_state
from meshflow.gateway.topology import Node, Topology
from meshflow.observability.tracing import otlp_endpoint, sampling_arg
from meshflow.processes import (
    ManagedProcess,
    Supervisor,
    meshflow_command,
    stop_all,
    wait_all_ready,
)
from meshflow.spec.flow import DeploymentSpec, FlowSpec
from meshflow.spec.launch import ExecutorLaunch, GatewayLaunch, Observability
from meshflow.spec.names import cluster_name, state_file, targets_file

if TYPE_CHECKING:
    from meshflow.mesh.certs import FlowCA
    from meshflow.mesh.config import Admin, Tracing
    from meshflow.mesh.sidecar import EnvoyProcess

log = logging.getLogger("meshflow.flow")


@dataclass
class Replica:
    """One replica of one shard: its executor process and, with Envoy, its sidecar."""

    deployment: str
    shard: int
    replica: int
    socket: str
    executor: ManagedProcess
    launch: ExecutorLaunch
    sidecar: EnvoyProcess | None = None
    ingress_port: int | None = None
    """The sidecar's mTLS port: bound by Envoy itself (port 0, no race with other programs),
    learnt from its admin once it is ready, then pinned in its config for restarts."""

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self.executor] + ([self.sidecar] if self.sidecar is not None else [])


@dataclass
class _Gateway:
    process: ManagedProcess
    launch: GatewayLaunch
    sidecar: EnvoyProcess | None = None
    egress: str | None = None
    topology_file: str = ""


@dataclass
class LocalRuntime:
    """The processes of one running Flow."""

    spec: FlowSpec
    run_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="meshflow-"))
    replicas: list[Replica] = field(default_factory=list)
    gateway: _Gateway | None = None
    port: int | None = None
    graphql_port: int | None = None
    _ca: FlowCA | None = None
    _signing_key: bytes | None = None
    """The gateway's private signing key (PEM): in this process's memory and handed to the
    gateway on its standard input, never written anywhere."""
    _gateway_key_file: str | None = None
    _eds_version: int = 0
    _published: bool = False
    _supervisor: Supervisor | None = None
    _state_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- start and stop ---------------------------------------------------------------------

    @property
    def envoy(self) -> bool:
        return self.spec.mesh == "envoy"

    @property
    def log_dir(self) -> str:
        path = self.spec.log_dir or self.run_dir
        os.makedirs(path, exist_ok=True)
        return path

    def processes(self) -> list[ManagedProcess]:
        procs = [p for r in self.replicas for p in r.processes]
        if self.gateway is not None:
            procs.append(self.gateway.process)
            if self.gateway.sidecar is not None:
                procs.append(self.gateway.sidecar)
        return procs

    def start(self) -> int:
        """Start every process, wait until the Flow serves, return the gateway's port."""
        try:
            os.chmod(self.run_dir, 0o700)
            if self.spec.auth is not None:
                self._prepare_signing()
            if self.envoy:
                self._prepare_mesh()
            for dep in self.spec.deployments:
                for shard in range(dep.shards):
                    for replica in range(dep.replicas):
                        self.replicas.append(self._make_replica(dep, shard, replica))
            if self.envoy:
                # Empty at first: a replica joins once it serves, so that the first health
                # check of the gateway's sidecar finds it up (a host that fails that check
                # reaches the sidecar's worker threads only a check interval later).
                self._write_endpoints(published=[])
            self.gateway = self._make_gateway()
            for proc in self.processes():
                proc.start()
            wait_all_ready(
                self.processes(),
                self.spec.timeout_ready,
                also=self._mesh_ready if self.envoy else None,
                what="the gateway's sidecar (waiting for every replica to pass health checks)",
            )
        except BaseException:
            self.stop()
            raise
        assert self.gateway.process.info is not None
        info = self.gateway.process.info
        self.port = int(info["port"])
        if "graphql_port" in info:
            self.graphql_port = int(info["graphql_port"])
        # A restarted gateway must come back on the same ports.
        gateway = self.gateway
        gateway.launch = dataclasses.replace(
            gateway.launch,
            port=self.port,
            graphql_port=self.graphql_port,
            metrics_port=_metrics_port(gateway.process, gateway.launch),
        )
        gateway.process.command = meshflow_command(*gateway.launch.to_argv())
        self._pin_ports(self.replicas)
        self._supervisor = Supervisor(self.processes, on_restart=lambda _: self.save_state())
        self._supervisor.start()
        self.save_state()
        return self.port

    @property
    def state_path(self) -> str:
        return state_file(self.spec.workspace, self.spec.name)

    def save_state(self) -> None:
        """Keep :func:`~meshflow.flow.status.snapshot` where ``meshflow status`` finds it, and
        the Prometheus targets where ``meshflow export prometheus`` points Prometheus."""
        with self._state_lock:  # the supervisor's thread and the caller's: latest wins
            data = snapshot(self)
            write_state(self.state_path, data)
            write_state(targets_file(self.spec.workspace, self.spec.name), file_sd(data))

    def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.port is not None:
                os.unlink(self.state_path)
                # An empty target list: Prometheus stops scraping a Flow that is gone.
                write_state(targets_file(self.spec.workspace, self.spec.name), [])
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        if self.gateway is not None:
            # The gateway first, so that it stops taking requests before executors go.
            stop_all([self.gateway.process], timeout=10.0)
            if self.gateway.sidecar is not None:
                stop_all([self.gateway.sidecar], timeout=5.0)
        stop_all([r.executor for r in self.replicas], timeout=10.0)
        stop_all([r.sidecar for r in self.replicas if r.sidecar is not None], timeout=5.0)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- building ---------------------------------------------------------------------------

    def _label(self, dep: DeploymentSpec, shard: int, replica: int) -> str:
        return f"{dep.name}-s{shard}-r{replica}"

    def _uses(self, dep: DeploymentSpec) -> dict[str, Any]:
        if dep.ref is not None:
            return {"uses": dep.ref}
        # A class defined in a script (or a function body): ship it by value.
        path = os.path.join(self.run_dir, f"{dep.name}.pickle")
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                cloudpickle.dump(dep.uses, fh)
        return {"uses_pickle": path}

    def _make_replica(self, dep: DeploymentSpec, shard: int, replica: int) -> Replica:
        label = self._label(dep, shard, replica)
        sock = os.path.join(self.run_dir, f"{label}.sock")
        ready = os.path.join(self.run_dir, f"{label}.ready")
        launch = ExecutorLaunch.of(
            dep,
            shard,
            replica,
            **self._uses(dep),
            address=f"unix:{sock}",
            workspace=os.path.abspath(self.spec.workspace),
            ready_file=ready,
            gateway_key_file=self._gateway_key_file,
            **self._observability(),
        )
        executor = ManagedProcess(
            name=f"executor {dep.name!r} (shard {shard}, replica {replica})",
            command=meshflow_command(*launch.to_argv()),
            log_path=os.path.join(self.log_dir, f"{label}.log"),
            ready_file=ready,
            env={**self._observability_env(), **dep.env},
            cleanup=[sock],
        )
        out = Replica(dep.name, shard, replica, sock, executor, launch)
        if self.envoy:
            where = f"{dep.name!r} (shard {shard}, replica {replica})"
            out.sidecar = self._make_replica_sidecar(dep, where, label, sock, 0)
        return out

    def _pin_ports(self, replicas: list[Replica]) -> None:
        """A restarted executor serves /metrics on the port it had: scrape targets stay
        valid."""
        for r in replicas:
            port = _metrics_port(r.executor, r.launch)
            r.launch = dataclasses.replace(r.launch, metrics_port=port)
            r.executor.command = meshflow_command(*r.launch.to_argv())

    def _learn_ingress_ports(self, replicas: list[Replica]) -> None:
        """Take the port each ready sidecar bound for its ingress (the sidecar pins it in its
        config, so that a restarted sidecar comes back where the gateway's sidecar looks)."""
        for r in replicas:
            if r.ingress_port or r.sidecar is None or r.sidecar.info is None:
                continue
            port = r.sidecar.ports.get("ingress")
            if port is None:
                raise ConfigError(f"{r.sidecar.name} does not report its ingress port")
            r.ingress_port = port

    def _prepare_signing(self) -> None:
        """A new key pair the gateway vouches for identities with: executors get the public
        half (a file), the gateway the private half (its standard input)."""
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.certs import write_private
        from meshflow.voucher import Signer

        signer = Signer.generate()
        self._signing_key = signer.private_pem
        self._gateway_key_file = os.path.join(self.run_dir, "gateway-signing.pub")
        write_private(self._gateway_key_file, signer.public_pem, 0o644)

    def _prepare_mesh(self) -> None:
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.certs import FlowCA

        os.makedirs(os.path.join(self.run_dir, "eds"), exist_ok=True)
        # Envoy's admin has no authentication: its socket (0600) sits in a folder only the
        # Flow's user can enter (the run folder is 0700 too).
        os.makedirs(self._admin_dir, mode=0o700, exist_ok=True)
        # An ephemeral CA: its key stays in this process; certificates go to the run folder,
        # never to the workspace that executors are handed.
        self._ca = FlowCA(os.path.join(self.run_dir, "pki"), self.spec.name, ephemeral=True)

    @property
    def _admin_dir(self) -> str:
        return os.path.join(self.run_dir, "admin")

    def _admin(self, label: str) -> Admin:
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.config import Admin

        return Admin(socket=os.path.join(self._admin_dir, f"{label}.sock"))

    def _make_replica_sidecar(
        self, dep: DeploymentSpec, where: str, label: str, sock: str, port: int
    ) -> EnvoyProcess:
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.config import replica_sidecar, write_yaml
        from meshflow.mesh.sidecar import EnvoyProcess

        assert self._ca is not None
        identity = self._ca.identity(dep.name)
        gateway_id = self._ca.identity("gateway").spiffe_id
        config_path = os.path.join(self.run_dir, f"{label}.envoy.yaml")
        admin = self._admin(label)
        write_yaml(
            config_path,
            replica_sidecar(
                node=label,
                listen_port=port,
                executor_socket=sock,
                identity=identity,
                allowed_peers=[gateway_id],
                admin=admin,
                tracing=self._envoy_tracing(f"sidecar {label}"),
            ),
        )
        return EnvoyProcess(
            name=f"sidecar of {where}",
            config_path=config_path,
            log_path=os.path.join(self.log_dir, f"{label}.envoy.log"),
            admin_socket=admin.socket,
            label=label,
            concurrency=self.spec.envoy_concurrency,
        )

    def _eds_path(self, cluster: str) -> str:
        return os.path.join(self.run_dir, "eds", f"{cluster}.yaml")

    def _write_endpoints(self, published: list[Replica] | None = None) -> None:
        """(Re)write every cluster's endpoint file: the Flow's replicas, or ``published``."""
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.config import endpoints, write_yaml

        members_of = self.replicas if published is None else published
        self._eds_version += 1
        for dep in self.spec.deployments:
            for shard in range(dep.shards):
                cluster = cluster_name(dep.name, shard)
                members = [
                    ("127.0.0.1", r.ingress_port)
                    for r in members_of
                    if r.deployment == dep.name and r.shard == shard and r.ingress_port
                ]
                write_yaml(self._eds_path(cluster), endpoints(cluster, members, self._eds_version))

    def _observability(self, gateway: bool = False) -> dict[str, Any]:
        """The metrics and tracing options of a process's launch."""
        sampling = sampling_arg(self.spec.tracing) if gateway and self.spec.tracing else None
        return Observability.options_of(
            self.spec, metrics_host=self.spec.host, metrics_port=0, trace_sampling=sampling
        )

    def _observability_env(self) -> dict[str, str]:
        env = {"MESHFLOW_LOG_FORMAT": self.spec.log_format}
        if self.spec.tracing:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint()
        return env

    def _envoy_tracing(self, service: str) -> Tracing | None:
        if not self.spec.tracing:
            return None
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.config import Tracing

        return Tracing(service=service, endpoint=otlp_endpoint())

    def _make_gateway(self) -> _Gateway:
        nodes = []
        for dep in self.spec.deployments:
            shards = tuple(
                tuple(
                    f"unix:{r.socket}"
                    for r in self.replicas
                    if r.deployment == dep.name and r.shard == shard
                )
                for shard in range(dep.shards)
            )
            nodes.append(
                Node(
                    name=dep.name,
                    needs=dep.needs,
                    shards=shards,
                    polling=dep.polling,
                    timeout=dep.timeout,
                )
            )
        topology_file = os.path.join(self.run_dir, "topology.json")
        with open(topology_file, "w", encoding="utf-8") as fh:
            json.dump(Topology(tuple(nodes)).to_dict(), fh)
        ready = os.path.join(self.run_dir, "gateway.ready")
        spec = self.spec
        sidecar = None
        egress = None
        if self.envoy:
            egress_sock = os.path.join(self.run_dir, "gateway-egress.sock")
            egress = f"unix:{egress_sock}"
            sidecar = self._make_gateway_sidecar(egress_sock)
        launch = GatewayLaunch(
            topology=topology_file,
            host=spec.host,
            port=spec.port or 0,
            mesh=spec.mesh,
            egress=egress,
            max_in_flight=spec.max_in_flight,
            max_request_bytes=spec.max_request_bytes,
            graphql_port=(spec.graphql_port or 0) if spec.graphql else None,
            graphql_limits=spec.graphql_limits,
            cors=spec.cors if spec.graphql else (),
            static=dict(spec.static) if spec.static else None,
            auth=spec.auth,
            signing_key_file="-" if spec.auth is not None else None,
            ready_file=ready,
            **self._observability(gateway=True),
        )
        process = ManagedProcess(
            name="gateway",
            command=meshflow_command(*launch.to_argv()),
            log_path=os.path.join(self.log_dir, "gateway.log"),
            ready_file=ready,
            env=self._observability_env(),
            stdin=self._signing_key,
        )
        return _Gateway(process, launch, sidecar, egress, topology_file)

    def _make_gateway_sidecar(self, egress_sock: str) -> EnvoyProcess:
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.config import gateway_sidecar, shard_cluster, write_yaml
        from meshflow.mesh.sidecar import EnvoyProcess

        assert self._ca is not None
        specs = [
            shard_cluster(
                dep,
                shard,
                self._ca.identity(dep.name).spiffe_id,
                eds_path=self._eds_path(cluster_name(dep.name, shard)),
            )
            for dep in self.spec.deployments
            for shard in range(dep.shards)
        ]
        config_path = os.path.join(self.run_dir, "gateway.envoy.yaml")
        admin = self._admin("gateway")
        write_yaml(
            config_path,
            gateway_sidecar(
                node="gateway",
                listen_socket=egress_sock,
                identity=self._ca.identity("gateway"),
                clusters=specs,
                admin=admin,
                tracing=self._envoy_tracing("sidecar gateway"),
            ),
        )
        return EnvoyProcess(
            name="sidecar of the gateway",
            config_path=config_path,
            log_path=os.path.join(self.log_dir, "gateway.envoy.log"),
            admin_socket=admin.socket,
            label="gateway",
            concurrency=self.spec.envoy_concurrency,
        )

    def _mesh_ready(self, replicas: list[Replica] | None = None) -> bool:
        """True when the gateway's sidecar sends traffic to every replica (of ``replicas``)."""
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.admin import healthy_hosts

        assert self.gateway is not None and self.gateway.sidecar is not None
        address = self.gateway.sidecar.admin_address
        if address is None:
            return False
        if replicas is None and not self._published:
            if not all(p.info is not None for r in self.replicas for p in r.processes):
                return False
            self._learn_ingress_ports(self.replicas)
            self._write_endpoints()
            self._published = True
        hosts = healthy_hosts(address)
        for r in self.replicas if replicas is None else replicas:
            cluster = cluster_name(r.deployment, r.shard)
            if f"127.0.0.1:{r.ingress_port}" not in hosts.get(cluster, []):
                return False
        return True

    # -- scaling ----------------------------------------------------------------------------

    def scale(self, name: str, replicas: int) -> None:
        """Start or stop replicas of ``name``; the gateway's sidecar follows without restart."""
        if not self.envoy:
            raise ConfigError("f.scale() needs mesh='envoy' (the gateway's sidecar balances)")
        dep = self.spec.deployment(name)
        current = [r for r in self.replicas if r.deployment == name]
        have = max((r.replica for r in current), default=-1) + 1
        assert self._supervisor is not None
        if replicas > have:
            added = [
                self._make_replica(dep, shard, index)
                for index in range(have, replicas)
                for shard in range(dep.shards)
            ]
            new_procs = [p for r in added for p in r.processes]
            for proc in new_procs:
                proc.start()
            try:
                wait_all_ready(new_procs, self.spec.timeout_ready)
            except BaseException:
                stop_all(new_procs, timeout=5.0)
                raise
            self._pin_ports(added)
            self._learn_ingress_ports(added)
            with self._supervisor.lock:
                self.replicas.extend(added)
            self._write_endpoints()
            self._wait(lambda: self._mesh_ready(added), "new replicas to pass health checks")
        elif replicas < have:
            leaving = [r for r in current if r.replica >= replicas]
            with self._supervisor.lock:
                self.replicas = [r for r in self.replicas if r not in leaving]
                for r in leaving:
                    for proc in r.processes:
                        proc.stopping = True
            self._write_endpoints()
            self._wait(lambda: self._gone(leaving), "the gateway's sidecar to drop old replicas")
            # Let calls already routed to them finish: executors drain, then their sidecars go.
            stop_all([r.executor for r in leaving], timeout=10.0)
            stop_all([r.sidecar for r in leaving if r.sidecar is not None], timeout=5.0)
        else:
            return
        self.spec = self.spec.with_deployment(dataclasses.replace(dep, replicas=replicas))
        self.save_state()

    def _gone(self, leaving: list[Replica]) -> bool:
        # lazy: keeps `import meshflow` cheap (~10 ms of Envoy config and certs)
        from meshflow.mesh.admin import admin_get

        assert self.gateway is not None and self.gateway.sidecar is not None
        address = self.gateway.sidecar.admin_address
        assert address is not None
        _, body = admin_get(address, "/clusters")
        return not any(f"127.0.0.1:{r.ingress_port}::" in body for r in leaving)

    def _wait(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + self.spec.timeout_ready
        while not condition():
            if time.monotonic() > deadline:
                raise ConfigError(f"timed out waiting for {what}")
            time.sleep(0.05)


def _metrics_port(proc: ManagedProcess, launch: ExecutorLaunch | GatewayLaunch) -> int | None:
    """The port a process bound for /metrics (0 asked for any), else what its launch says."""
    info = proc.info or {}
    if "metrics_port" in info and launch.metrics_port is not None:
        return int(info["metrics_port"])
    return launch.metrics_port
