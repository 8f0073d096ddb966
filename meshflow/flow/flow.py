"""The Flow: a graph of Executors behind one gateway, run as local processes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any

import cloudpickle

from meshflow.client.client import Client, Posting
from meshflow.errors import ConfigError
from meshflow.flow.deployment import Deployment, make_deployment
from meshflow.flow.processes import ManagedProcess, stop_all, wait_all_ready
from meshflow.gateway.topology import GATEWAY, Node, Topology, check_graph

log = logging.getLogger("meshflow.flow")

MESHES = ("direct",)


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
        mesh: ``'direct'``: the gateway calls executors itself.
        host: the interface the gateway binds; loopback by default.
        workspace: root folder of the executors' workspaces.
        timeout_ready: seconds to wait for every process to serve.
        max_in_flight: requests the gateway holds at once before it sheds load.
        max_request_bytes: the largest request the gateway accepts.
        log_dir: keep the processes' logs there (default: a temporary folder, removed on exit).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        name: str | None = None,
        mesh: str = "direct",
        host: str = "127.0.0.1",
        workspace: str = "workspace",
        timeout_ready: float = 60.0,
        max_in_flight: int = 1024,
        max_request_bytes: int = 64 * 1024 * 1024,
        log_dir: str | None = None,
    ) -> None:
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise ConfigError(f"port must be a number from 1 to 65535 or None, got {port!r}")
        if mesh not in MESHES:
            raise ConfigError(f"mesh={mesh!r} is not supported; use one of {MESHES}")
        if max_in_flight < 1 or max_request_bytes < 1024:
            raise ConfigError("max_in_flight must be >= 1 and max_request_bytes >= 1024")
        self.name = name or "flow"
        self.mesh = mesh
        self.host = host
        self.workspace = workspace
        self.timeout_ready = timeout_ready
        self.max_in_flight = max_in_flight
        self.max_request_bytes = max_request_bytes
        self.log_dir = log_dir
        self._port = port
        self._deployments: dict[str, Deployment] = {}
        self._processes: list[ManagedProcess] = []
        self._run_dir: str | None = None
        self._client: Client | None = None
        self._topology: Topology | None = None

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
                reduced by score) or per endpoint, e.g. ``{'/search': 'ALL', '*': 'ANY'}``.
            timeout: default deadline in seconds of each call to this deployment.
            env: extra environment variables of its processes.
        """
        if self._processes:
            raise ConfigError("cannot add deployments to a running Flow; stop it first")
        name = name if name is not None else f"executor{len(self._deployments)}"
        if name in self._deployments:
            raise ConfigError(f"two deployments are named {name!r}; names must be unique")
        if needs is None:
            needs = list(self._deployments)[-1] if self._deployments else GATEWAY
        self._deployments[name] = make_deployment(
            uses=uses,
            name=name,
            uses_with=uses_with,
            replicas=replicas,
            shards=shards,
            needs=needs,
            polling=polling,
            timeout=timeout,
            env=env,
        )
        return self

    @property
    def deployments(self) -> list[Deployment]:
        return list(self._deployments.values())

    @property
    def port(self) -> int | None:
        """The gateway's port: as configured, or the one it bound once started."""
        return self._port

    def check(self) -> None:
        """Validate the graph (unknown needs, cycles) without starting anything."""
        if not self._deployments:
            raise ConfigError("the Flow has no deployments; add one with f.add(uses=...)")
        check_graph(
            Node(name=d.name, needs=d.needs, shards=((),) * d.shards)
            for d in self._deployments.values()
        )

    # -- running ------------------------------------------------------------------------

    def start(self) -> Flow:
        """Start every process in parallel and return when all serve."""
        if self._processes:
            raise ConfigError("the Flow is already running")
        self.check()
        if self._port is not None:
            _check_port_free(self.host, self._port)
        self._run_dir = tempfile.mkdtemp(prefix="meshflow-")
        try:
            self._launch()
            wait_all_ready(self._processes, self.timeout_ready)
        except BaseException:
            self.close()
            raise
        gateway = self._processes[-1]
        assert gateway.info is not None
        self._port = int(gateway.info["port"])
        log.info("Flow %r ready: gateway on %s:%d", self.name, self.host, self._port)
        return self

    def _launch(self) -> None:
        assert self._run_dir is not None
        run = self._run_dir
        logs = self.log_dir or run
        os.makedirs(logs, exist_ok=True)
        nodes = []
        for dep in self._deployments.values():
            uses_args = self._uses_args(dep, run)
            per_shard = []
            for shard in range(dep.shards):
                addresses = []
                for replica in range(dep.replicas):
                    label = (
                        f"{dep.name}-s{shard}-r{replica}"
                        if dep.shards > 1
                        else (f"{dep.name}-r{replica}")
                    )
                    address = f"unix:{os.path.join(run, label + '.sock')}"
                    addresses.append(address)
                    argv = [
                        "executor",
                        *uses_args,
                        "--name",
                        dep.name,
                        "--address",
                        address,
                        "--uses-with",
                        json.dumps(dict(dep.uses_with)),
                        "--replica-id",
                        str(replica),
                        "--shard-id",
                        str(shard),
                        "--replicas",
                        str(dep.replicas),
                        "--shards",
                        str(dep.shards),
                        "--workspace",
                        os.path.abspath(self.workspace),
                        "--ready-file",
                        os.path.join(run, label + ".ready"),
                    ]
                    self._processes.append(
                        ManagedProcess(
                            name=f"executor {dep.name!r} (shard {shard}, replica {replica})",
                            argv=argv,
                            log_path=os.path.join(logs, label + ".log"),
                            ready_file=os.path.join(run, label + ".ready"),
                            env=dict(dep.env),
                        )
                    )
                per_shard.append(tuple(addresses))
            nodes.append(
                Node(
                    name=dep.name,
                    needs=dep.needs,
                    shards=tuple(per_shard),
                    polling=dep.polling,
                    timeout=dep.timeout,
                )
            )
        self._topology = Topology(tuple(nodes))
        topology_file = os.path.join(run, "topology.json")
        with open(topology_file, "w", encoding="utf-8") as fh:
            json.dump(self._topology.to_dict(), fh)
        self._processes.append(
            ManagedProcess(
                name="gateway",
                argv=[
                    "gateway",
                    "--topology",
                    topology_file,
                    "--host",
                    self.host,
                    "--port",
                    str(self._port or 0),
                    "--mesh",
                    self.mesh,
                    "--max-in-flight",
                    str(self.max_in_flight),
                    "--max-request-bytes",
                    str(self.max_request_bytes),
                    "--ready-file",
                    os.path.join(run, "gateway.ready"),
                ],
                log_path=os.path.join(logs, "gateway.log"),
                ready_file=os.path.join(run, "gateway.ready"),
            )
        )
        for proc in self._processes:
            proc.start()

    def _uses_args(self, dep: Deployment, run: str) -> list[str]:
        ref = dep.ref
        if ref is not None:
            return ["--uses", ref]
        # A class defined in a script (or a function body): ship it by value.
        path = os.path.join(run, f"{dep.name}.pickle")
        with open(path, "wb") as fh:
            cloudpickle.dump(dep.uses, fh)
        return ["--uses-pickle", path]

    def close(self) -> None:
        """Stop every process of the Flow and remove its temporary files."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._processes:
            # The gateway first, so that it stops taking requests before executors go.
            stop_all(self._processes[-1:], timeout=10.0)
            stop_all(self._processes[:-1], timeout=10.0)
            self._processes = []
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

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
        if getattr(self, "_processes", None):
            self.close()

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the running processes, by process name."""
        return {p.name: p.pid for p in self._processes if p.popen is not None}

    def log_tail(self, process: str, lines: int = 25) -> str:
        """The last lines of a running process's log (``'gateway'`` or an executor's)."""
        for proc in self._processes:
            if proc.name == process or proc.name.startswith(f"executor {process!r}"):
                return proc.log_tail(lines)
        raise KeyError(process)

    def block(self) -> None:
        """Serve until SIGINT (Ctrl-C) or SIGTERM."""
        if not self._processes:
            raise ConfigError("the Flow is not running; use `with f:` or f.start() first")
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop.wait(0.5):
                dead = [p.name for p in self._processes if not p.alive()]
                if dead:
                    log.warning("process(es) exited: %s", ", ".join(dead))
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    # -- requests -----------------------------------------------------------------------

    def _blocking_client(self) -> Client:
        return self.client

    @property
    def client(self) -> Client:
        """A :class:`Client` connected to this Flow's gateway."""
        if not self._processes or self._port is None:
            raise ConfigError("the Flow is not running; use `with f:` or f.start() first")
        if self._client is None:
            self._client = Client(self.host, self._port)
        return self._client

    # -- configuration files --------------------------------------------------------------

    @classmethod
    def load_config(cls, path: str, *, port: int | None = None) -> Flow:
        """Build a Flow from a YAML file (see ``docs/flow-yaml.md``); ``port`` overrides its
        gateway port."""
        from meshflow.flow.config import load_flow

        return load_flow(path, port=port)

    def save_config(self, path: str) -> None:
        """Write this Flow as YAML that :meth:`load_config` reads back."""
        from meshflow.flow.config import save_flow

        save_flow(self, path)

    def __repr__(self) -> str:
        state = f"running on port {self._port}" if self._processes else "stopped"
        return f"<Flow {self.name!r} ({len(self._deployments)} deployments, {state})>"


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise ConfigError(
                f"port {port} on {host} is already in use; choose another or leave port=None"
            ) from None
