"""An Envoy sidecar's admin interface, and the small client that talks to it.

Envoy's admin has no authentication: whoever reaches it can drain every listener, change
runtime settings or stop the server. So a sidecar's admin listens only on a unix socket of
mode 0600 inside a 0700 folder (the Flow's run folder locally, ``/tmp/envoy-admin.sock`` in a
container): only the Flow's own user (and root) can open it, and no TCP port serves it.

What must stay reachable over HTTP (Prometheus scraping and readiness) goes through a small
separate listener of the sidecar, ``stats`` (loopback locally, ``:15090`` in containers),
that routes ``GET /stats/prometheus`` and ``GET /ready`` to the admin socket and answers 404
to everything else.
"""

from __future__ import annotations

import http.client
import json
import re
import socket

STATS_LISTENER = "stats"
"""The name of the listener that serves ``/stats/prometheus`` and ``/ready`` over HTTP."""

STATS_PATHS = ("/stats/prometheus", "/ready")
"""The only admin paths the stats listener forwards (GET only)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def admin_request(
    admin: str, path: str, *, method: str = "GET", timeout: float = 1.0
) -> tuple[int, str]:
    """Send ``method path`` to the admin socket ``admin``; (0, '') when it does not answer."""
    conn = _UnixConnection(admin.removeprefix("unix:"), timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except OSError:
        return 0, ""
    finally:
        conn.close()


def admin_get(admin: str, path: str, timeout: float = 1.0) -> tuple[int, str]:
    """GET ``path`` from the admin socket ``admin``; (0, '') when it does not answer."""
    return admin_request(admin, path, timeout=timeout)


def ready(admin: str) -> bool:
    """True when the sidecar says it is ready and none of its listeners was stopped."""
    return admin_get(admin, "/ready")[0] == 200 and listeners_stopped(admin) == 0


def listeners_stopped(admin: str) -> int:
    """How many listeners were stopped (``/drain_listeners``): a sidecar with any stopped
    listener no longer serves, even though its ``/ready`` still says so."""
    return stat(admin, "listener_manager.listener_stopped") or 0


def stat(admin: str, name: str) -> int | None:
    """The value of one counter or gauge, or None when Envoy has no such stat."""
    status, body = admin_get(admin, f"/stats?filter=^{re.escape(name)}$")
    if status != 200:
        return None
    for line in body.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key == name and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def listener_ports(admin: str) -> dict[str, int]:
    """The TCP port each listener of the sidecar bound (listeners on unix sockets left out)."""
    status, body = admin_get(admin, "/listeners?format=json")
    if status != 200:
        return {}
    out = {}
    for found in json.loads(body).get("listener_statuses", []):
        port = found.get("local_address", {}).get("socket_address", {}).get("port_value")
        if port:
            out[str(found.get("name"))] = int(port)
    return out


def listener_names(admin: str) -> set[str]:
    """The names of the listeners the Envoy has open (none when its admin does not answer)."""
    status, body = admin_get(admin, "/listeners?format=json")
    if status != 200:
        return set()
    return {str(found.get("name")) for found in json.loads(body).get("listener_statuses", [])}


def listener_port(admin: str, listener: str) -> int | None:
    """The port the sidecar bound for ``listener`` (configured with port 0)."""
    return listener_ports(admin).get(listener)


def healthy_hosts(admin: str) -> dict[str, list[str]]:
    """Per cluster, the hosts the sidecar would send traffic to now."""
    status, body = admin_get(admin, "/clusters?format=json")
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
            address = host.get("address", {})
            if "pipe" in address:  # a unix socket (envoy_proxy='host')
                hosts.append(address["pipe"].get("path", ""))
                continue
            sock = address.get("socket_address", {})
            hosts.append(f"{sock.get('address')}:{sock.get('port_value')}")
        out[cluster["name"]] = hosts
    return out
