"""What a running Flow is made of, and whether each part is healthy.

:func:`snapshot` describes the processes (pids, addresses, sidecar listeners and admin
addresses, config files); the Flow keeps it in ``<workspace>/.meshflow/run/<flow>.json``
while it runs, so that ``meshflow status`` in another shell can read it. :func:`with_health`
adds what is true right now: is each process alive, does each executor answer its gRPC health
check, does the gateway's sidecar send traffic to each replica.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshflow.errors import ConfigError
from meshflow.spec.names import cluster_name

if TYPE_CHECKING:
    from meshflow.flow.local import LocalRuntime
    from meshflow.mesh.sidecar import EnvoyProcess
    from meshflow.processes import ManagedProcess


def _process(proc: ManagedProcess) -> dict[str, Any]:
    return {"pid": proc.pid if proc.popen else None, "restarts": proc.restarts}


def _metrics_url(proc: ManagedProcess, host: str) -> str | None:
    port = (proc.info or {}).get("metrics_port")
    return f"http://{host}:{port}/metrics" if port else None


def _sidecar_metrics(proc: EnvoyProcess) -> str | None:
    """The sidecar's stats listener (its admin is a unix socket that serves no one else)."""
    port = proc.ports.get("stats")
    return f"http://127.0.0.1:{port}/stats/prometheus" if port else None


def snapshot(runtime: LocalRuntime) -> dict[str, Any]:
    """The static description of a running Flow."""
    flow = runtime.spec
    gateway = runtime.gateway
    assert gateway is not None
    gw: dict[str, Any] = {
        **_process(gateway.process),
        "address": f"{flow.host}:{runtime.port}",
        "graphql": (
            f"http://{flow.host}:{runtime.graphql_port}/graphql" if runtime.graphql_port else None
        ),
        "metrics": _metrics_url(gateway.process, flow.host),
        "sidecar": None,
    }
    if gateway.sidecar is not None:
        gw["sidecar"] = {
            **_process(gateway.sidecar),
            "listener": gateway.egress,
            "admin": gateway.sidecar.admin_socket,
            "config": gateway.sidecar.config_path,
            "metrics": _sidecar_metrics(gateway.sidecar),
        }
    deployments = []
    for dep in flow.deployments:
        replicas = []
        for r in runtime.replicas:
            if r.deployment != dep.name:
                continue
            entry: dict[str, Any] = {
                "shard": r.shard,
                "replica": r.replica,
                "cluster": cluster_name(dep.name, r.shard),
                "executor": {
                    **_process(r.executor),
                    "address": f"unix:{r.socket}",
                    "metrics": _metrics_url(r.executor, flow.host),
                },
                "sidecar": None,
            }
            # envoy_proxy='host': no sidecar of its own; the Flow's one Envoy (the gateway's)
            # holds the replica's listener, and its metrics are listed once, with the gateway's
            own = r.ingress.sidecar if r.ingress is not None else None
            sidecar = own or gateway.sidecar
            if r.ingress is not None and sidecar is not None:
                entry["sidecar"] = {
                    **_process(sidecar),
                    "listener": r.ingress.socket,
                    "admin": sidecar.admin_socket,
                    "config": sidecar.config_path,
                    "metrics": _sidecar_metrics(sidecar) if own is not None else None,
                    **({} if own is not None else {"shared": True}),
                }
            replicas.append(entry)
        entry_dep: dict[str, Any] = {"name": dep.name, "shards": dep.shards, "replicas": replicas}
        hub = runtime.hub.get(dep.name)
        if hub is not None:  # which executor version, in which environment
            entry_dep["hub"] = hub.to_dict()
        deployments.append(entry_dep)
    return {
        "name": flow.name,
        "mesh": flow.mesh,
        "pid": os.getpid(),
        "gateway": gw,
        "deployments": deployments,
    }


def scrape_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Prometheus scrape target of a :func:`snapshot`: the gateway's and executors'
    ``/metrics`` (with ``Flow(metrics=True)``) and the sidecars' ``/stats/prometheus``."""
    out: list[dict[str, Any]] = []

    def add(url: str | None, component: str, **labels: Any) -> None:
        if url:
            out.append({"url": url, "component": component, **labels})

    gateway = data["gateway"]
    add(gateway.get("metrics"), "gateway")
    if gateway.get("sidecar"):
        add(gateway["sidecar"].get("metrics"), "sidecar", deployment="gateway")
    for dep in data["deployments"]:
        for r in dep["replicas"]:
            where = {"deployment": dep["name"], "shard": r["shard"], "replica": r["replica"]}
            add(r["executor"].get("metrics"), "executor", **where)
            if r.get("sidecar"):
                add(r["sidecar"].get("metrics"), "sidecar", **where)
    return out


def file_sd(data: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`scrape_targets` in Prometheus ``file_sd_configs`` form (one group a target)."""
    groups = []
    for target in scrape_targets(data):
        url = urlsplit(target["url"])
        labels = {k: str(v) for k, v in target.items() if k != "url"}
        labels["flow"] = data["name"]
        labels["__metrics_path__"] = url.path
        groups.append({"targets": [url.netloc], "labels": labels})
    return groups


def write_state(path: str, data: dict[str, Any] | list[Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically: a reader sees the old file or the
    new one, never a part. Safe from several threads: each writes its own temporary file."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.chmod(tmp, 0o644)  # as open() would have made it (mkstemp makes it 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_state(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"no running Flow found ({path} does not exist)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not _alive(data.get("pid")):
        raise ConfigError(f"the Flow that wrote {path} (pid {data.get('pid')}) is not running")
    return data


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def with_health(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a :func:`snapshot`) with live ``alive``, ``serving`` and ``healthy`` fields."""
    # lazy: keeps `import meshflow` cheap: the Envoy admin client loads only to ask sidecars
    from meshflow.mesh.admin import admin_get, healthy_hosts, listeners_stopped

    def check(side: dict[str, Any]) -> None:
        side["alive"] = _alive(side["pid"])
        answers = side["alive"] and bool(side["admin"])
        # A sidecar whose listeners were drained still says /ready: count stopped ones.
        side["listeners_stopped"] = listeners_stopped(side["admin"]) if answers else 0
        side["ready"] = (
            answers
            and admin_get(side["admin"], "/ready")[0] == 200
            and not side["listeners_stopped"]
        )

    out: dict[str, Any] = json.loads(json.dumps(data))
    gw = out["gateway"]
    gw["alive"] = _alive(gw["pid"])
    gw["serving"] = gw["alive"] and _serving(gw["address"])
    hosts: dict[str, list[str]] | None = None
    sidecar = gw.get("sidecar")
    if sidecar:
        check(sidecar)
        # The gateway's calls all leave through its sidecar: without it, nothing is served.
        gw["serving"] = gw["serving"] and sidecar["ready"]
        hosts = healthy_hosts(sidecar["admin"]) if sidecar["ready"] else {}
    for dep in out["deployments"]:
        for r in dep["replicas"]:
            ex = r["executor"]
            ex["alive"] = _alive(ex["pid"])
            ex["serving"] = ex["alive"] and _serving(ex["address"])
            side = r.get("sidecar")
            if side:
                check(side)
                r["healthy"] = (
                    side["ready"]
                    and hosts is not None
                    and side["listener"] in hosts.get(r["cluster"], [])
                )
            else:
                r["healthy"] = ex["serving"]
    return out


def format_status(data: dict[str, Any]) -> str:
    """A table of :func:`with_health` for people."""
    gw = data["gateway"]
    lines = [
        f"Flow {data['name']!r} (mesh {data['mesh']}), gateway {gw['address']} pid {gw['pid']} "
        f"{'serving' if gw.get('serving') else 'NOT SERVING'}"
    ]
    if gw.get("graphql"):
        lines.append(f"  GraphQL {gw['graphql']}")
    if gw.get("sidecar"):
        s = gw["sidecar"]
        lines.append(
            f"  gateway sidecar pid {s['pid']} listener {s['listener']} admin {s['admin']} "
            f"{'ready' if s.get('ready') else 'NOT READY'}"
        )
    lines.append(
        f"  {'deployment':<16} {'shard':>5} {'replica':>7} {'executor pid':>12} "
        f"{'sidecar pid':>11}  {'listener':<21} {'admin':<21} health"
    )
    for dep in data["deployments"]:
        for r in dep["replicas"]:
            side = r.get("sidecar") or {}
            health = "healthy" if r.get("healthy") else "UNHEALTHY"
            restarts = r["executor"]["restarts"] + side.get("restarts", 0)
            if restarts:
                health += f" ({restarts} restarts)"
            lines.append(
                f"  {dep['name']:<16} {r['shard']:>5} {r['replica']:>7} "
                f"{r['executor']['pid']!s:>12} "
                f"{side.get('pid', '-')!s:>11}  {side.get('listener', '-')!s:<21} "
                f"{side.get('admin', '-')!s:<21} {health}"
            )
    hubs = [(d["name"], d["hub"]) for d in data["deployments"] if d.get("hub")]
    if hubs:
        lines.append(f"  {'deployment':<16} {'hub executor':<24} {'version':<12} environment")
        for name, hub in hubs:
            lines.append(
                f"  {name:<16} {hub['name']:<24} {hub['version']:<12} {hub['environment']}"
            )
    return "\n".join(lines)
