"""Running a Flow as local processes: executors, their sidecars, the gateway and its sidecar.

Everything starts at once. Executors listen on unix sockets in a private temporary
directory; the Flow's :class:`~meshflow.mesh.local.LocalMesh` adds what its mesh needs (with
``mesh='envoy'``, a sidecar per replica and one beside the gateway) and says when it routes to
every replica. The Flow is ready when every process is and its mesh routes. A
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cloudpickle

from meshflow import forkserver
from meshflow.errors import ConfigError
from meshflow.flow.status import file_sd, snapshot, write_state
from meshflow.gateway.topology import Node, Topology
from meshflow.mesh.local import Ingress, LocalMesh, local_mesh
from meshflow.observability.tracing import otlp_endpoint, sampling_arg
from meshflow.processes import (
    ManagedProcess,
    Supervisor,
    child_env,
    meshflow_command,
    stop_all,
    wait_all_ready,
)
from meshflow.spec.devices import replica_devices
from meshflow.spec.flow import DeploymentSpec, FlowSpec
from meshflow.spec.launch import ExecutorLaunch, GatewayLaunch, Observability
from meshflow.spec.names import state_file, targets_file

if TYPE_CHECKING:
    from meshflow.hub.prepare import HubExecutor
    from meshflow.mesh.sidecar import EnvoyProcess

log = logging.getLogger("meshflow.flow")


@dataclass
class Replica:
    """One replica of one shard: its executor process and its door into the mesh, if any."""

    deployment: str
    shard: int
    replica: int
    socket: str
    executor: ManagedProcess
    launch: ExecutorLaunch
    ingress: Ingress | None = None

    @property
    def sidecar(self) -> EnvoyProcess | None:
        return self.ingress.sidecar if self.ingress is not None else None

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
    mesh: LocalMesh | None = None
    _signing_key: bytes | None = None
    """The gateway's private signing key (PEM): in this process's memory and handed to the
    gateway on its standard input, never written anywhere."""
    _gateway_key_file: str | None = None
    _supervisor: Supervisor | None = None
    _state_lock: threading.Lock = field(default_factory=threading.Lock)
    hub: dict[str, HubExecutor] = field(default_factory=dict)
    """The hub deployments (``uses='hub://...'``): version and environment of each."""

    # -- start and stop ---------------------------------------------------------------------

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
            self.hub = self._prepare_hub()
            self.mesh = local_mesh(self.spec, self.run_dir, self.log_dir)
            self.mesh.prepare()
            for dep in self.spec.deployments:
                for shard in range(dep.shards):
                    for replica in range(dep.replicas):
                        self.replicas.append(self._make_replica(dep, shard, replica))
            self.gateway = self._make_gateway()
            with self._fork_server() as server:
                for proc in self.processes():
                    proc.start(fork_server=server)
            wait_all_ready(
                self.processes(),
                self.spec.timeout_ready,
                also=self.mesh.ready,
                what=self.mesh.waiting_for,
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

    @contextlib.contextmanager
    def _fork_server(self) -> Iterator[forkserver.ForkServer | None]:
        """While the Flow starts its processes: a fork server to fork them from
        (``fork_server=True`` on Linux; None when there is none), closed once they are all
        forked."""
        if not (self.spec.fork_server and forkserver.available()):
            yield None
            return
        try:
            server = forkserver.ForkServer.start(
                log_path=os.path.join(self.log_dir, "forkserver.log"), env=child_env({})
            )
        except OSError as exc:
            log.warning("no fork server (%s): every process starts fresh", exc)
            yield None
            return
        try:
            yield server
        finally:
            server.close()

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

    def _prepare_hub(self) -> dict[str, HubExecutor]:
        """Resolve every ``hub://`` deployment to one version and build (or find) its
        environment, before any process starts."""
        from meshflow.hub.prepare import hub_deployments, prepare  # lazy: only for hub Flows

        refs = hub_deployments(self.spec)
        return prepare(refs) if refs else {}

    def _command(self, dep_name: str, argv: list[str]) -> list[str]:
        """The command line of an executor: a hub executor runs on its environment's
        interpreter, any other on this one."""
        hub = self.hub.get(dep_name)
        return hub.command(argv) if hub is not None else meshflow_command(*argv)

    def _uses(self, dep: DeploymentSpec) -> dict[str, Any]:
        if dep.name in self.hub:
            return {"uses": self.hub[dep.name].executor}
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
            command=self._command(dep.name, launch.to_argv()),
            log_path=os.path.join(self.log_dir, f"{label}.log"),
            ready_file=ready,
            env={
                **self._observability_env(),
                **(self.hub[dep.name].env() if dep.name in self.hub else {}),
                **dep.env,
                **replica_devices(
                    gpus=dep.gpus,
                    devices=dep.devices,
                    env=dep.env,
                    index=shard * dep.replicas + replica,
                    environ=os.environ,
                    deployment=dep.name,
                ),
            },
            cleanup=[sock],
        )
        assert self.mesh is not None
        where = f"{dep.name!r} (shard {shard}, replica {replica})"
        ingress = self.mesh.join(dep, shard, label, where, sock)
        return Replica(dep.name, shard, replica, sock, executor, launch, ingress)

    def _pin_ports(self, replicas: list[Replica]) -> None:
        """A restarted executor serves /metrics on the port it had: scrape targets stay
        valid."""
        for r in replicas:
            port = _metrics_port(r.executor, r.launch)
            r.launch = dataclasses.replace(r.launch, metrics_port=port)
            r.executor.command = self._command(r.deployment, r.launch.to_argv())

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
        assert self.mesh is not None
        egress, sidecar = self.mesh.gateway_sidecar()
        launch = GatewayLaunch(
            topology=topology_file,
            host=spec.host,
            port=spec.port or 0,
            mesh=spec.mesh,
            egress=egress,
            max_in_flight=spec.max_in_flight,
            admission=spec.admission,
            max_request_bytes=spec.max_request_bytes,
            graphql_port=(spec.graphql_port or 0) if spec.graphql else None,
            graphql_limits=spec.graphql_limits,
            persisted_queries=spec.persisted_queries,
            federation=spec.federation,
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

    # -- scaling ----------------------------------------------------------------------------

    def scale(self, name: str, replicas: int) -> None:
        """Start or stop replicas of ``name``; the gateway's sidecar follows without restart."""
        assert self.mesh is not None and self._supervisor is not None
        if not self.mesh.scalable:
            raise ConfigError("f.scale() needs mesh='envoy' (the gateway's sidecar balances)")
        dep = self.spec.deployment(name)
        current = [r for r in self.replicas if r.deployment == name]
        have = max((r.replica for r in current), default=-1) + 1
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
            with self._supervisor.lock:
                self.replicas.extend(added)
            self.mesh.admit([r.ingress for r in added if r.ingress is not None])
        elif replicas < have:
            leaving = [r for r in current if r.replica >= replicas]
            with self._supervisor.lock:
                self.replicas = [r for r in self.replicas if r not in leaving]
                for r in leaving:
                    for proc in r.processes:
                        proc.stopping = True
            self.mesh.retire([r.ingress for r in leaving if r.ingress is not None])
            # Let calls already routed to them finish: executors drain, then their sidecars go.
            stop_all([r.executor for r in leaving], timeout=10.0)
            stop_all([r.sidecar for r in leaving if r.sidecar is not None], timeout=5.0)
        else:
            return
        self.spec = self.spec.with_deployment(dataclasses.replace(dep, replicas=replicas))
        self.save_state()


def _metrics_port(proc: ManagedProcess, launch: ExecutorLaunch | GatewayLaunch) -> int | None:
    """The port a process bound for /metrics (0 asked for any), else what its launch says."""
    info = proc.info or {}
    if "metrics_port" in info and launch.metrics_port is not None:
        return int(info["metrics_port"])
    return launch.metrics_port
