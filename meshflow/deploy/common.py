"""What the docker-compose and Kubernetes exports share: the commands that start executors and
the gateway in a container, and the gateway sidecar's view of a shard."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import yaml

from meshflow.deploy.images import (
    ADMIN_SOCKET,
    EXECUTOR_PORT,
    GATEWAY_PORT,
    HTTP_PORT,
    METRICS_PORT,
    STATS_PORT,
    BuildContext,
)
from meshflow.errors import ConfigError
from meshflow.flow.deployment import Deployment
from meshflow.gateway.topology import Node, Topology
from meshflow.mesh.config import Admin
from meshflow.observability.tracing import sampling_arg

EGRESS = "/run/meshflow/egress.sock"
SIGNING_DIR = "/etc/meshflow/signing"
SIGNING_KEY = f"{SIGNING_DIR}/gateway.key"
"""The gateway's Ed25519 signing key (it vouches for identities): mounted into the gateway
only."""
GATEWAY_KEY_DIR = "/etc/meshflow/gateway-key"
GATEWAY_PUBLIC_KEY = f"{GATEWAY_KEY_DIR}/gateway.pub"
"""Its public key, what executors check vouchers with."""
SIDECAR_ADMIN = Admin(socket=ADMIN_SOCKET, stats_port=STATS_PORT, stats_host="0.0.0.0")
"""Every exported sidecar: admin on a 0600 socket in its own container, stats on :15090."""


def ref(dep: Deployment) -> str:
    """How a container imports the deployment's class; refused for a script's class."""
    if dep.ref is None:
        cls = dep.uses if isinstance(dep.uses, type) else type(dep.uses)
        raise ConfigError(
            f"deployment {dep.name!r} uses {cls.__module__}.{cls.__qualname__}, a class defined "
            "in a script: a container cannot import it. Move it into a module (e.g. "
            f"my_pkg/executors.py) and use uses='my_pkg.executors:{cls.__name__}'"
        )
    return dep.ref


def executor_command(
    flow: Any,
    dep: Deployment,
    shard: int,
    replica: int | None = None,
    *,
    context: BuildContext | None = None,
) -> list[str]:
    """``meshflow executor ...`` for one replica (``replica`` None: any pod of the shard);
    with ``context``, ``uses`` as the image finds it."""
    uses = ref(dep) if context is None else context.uses(ref(dep), dep.name)
    command = ["executor", "--uses", uses, "--name", dep.name]
    command += ["--address", f"127.0.0.1:{EXECUTOR_PORT}"]
    command += ["--uses-with", json.dumps(dict(dep.uses_with), sort_keys=True)]
    if replica is not None:
        command += ["--replica-id", str(replica)]
    command += ["--shard-id", str(shard), "--replicas", str(dep.replicas)]
    command += ["--shards", str(dep.shards), "--workspace", "/workspace"]
    if flow.metrics:
        command += ["--metrics-host", "0.0.0.0", "--metrics-port", str(METRICS_PORT)]
    if flow.tracing:
        command.append("--tracing")
    if flow.auth is not None:
        command += ["--gateway-key-file", GATEWAY_PUBLIC_KEY]
    return command


def node(dep: Deployment, shards: Sequence[tuple[str, ...]]) -> Node:
    return Node(
        name=dep.name,
        needs=dep.needs,
        shards=tuple(shards),
        polling=dep.polling,
        timeout=dep.timeout,
    )


def gateway_command(
    flow: Any, nodes: list[Node], *, context: BuildContext | None = None
) -> list[str]:
    """``meshflow gateway ...`` with the topology inline, behind its sidecar's socket; with
    ``context``, static folders as the image holds them."""
    command = [
        "gateway",
        "--topology",
        json.dumps(Topology(tuple(nodes)).to_dict(), sort_keys=True),
    ]
    command += ["--host", "0.0.0.0", "--port", str(GATEWAY_PORT), "--mesh", "envoy"]
    command += ["--egress", f"unix:{EGRESS}", "--max-in-flight", str(flow.max_in_flight)]
    command += ["--max-request-bytes", str(flow.max_request_bytes)]
    if flow.graphql:
        limits = json.dumps(dataclasses.asdict(flow.graphql_limits), sort_keys=True)
        command += ["--graphql-port", str(HTTP_PORT), "--graphql-limits", limits]
        for origin in flow.cors:
            command += ["--cors", origin]
    if flow.static and context is not None:
        inside = {
            prefix: context.inside(folder, f"static[{prefix!r}]")
            for prefix, folder in sorted(flow.static.items())
        }
        command += ["--static", json.dumps(inside, sort_keys=True)]
    if flow.auth is not None:
        command += ["--auth", auth_json(flow), "--signing-key-file", SIGNING_KEY]
    if flow.metrics:
        command += ["--metrics-host", "0.0.0.0", "--metrics-port", str(METRICS_PORT)]
    if flow.tracing:
        command += ["--tracing", "--trace-sampling", sampling_arg(flow.tracing)]
    return command


def auth_json(flow: Any) -> str:
    """The gateway's auth options; keys must come from the environment in containers."""
    data = dict(json.loads(flow.auth.to_json()))
    for key in ("secret_file", "public_key_file", "jwks_file"):
        if data.get(key):
            raise ConfigError(
                f"auth.{key} names a file on this machine; in containers give the key by "
                "environment (secret_env, public_key_env), which the export passes through"
            )
    return json.dumps(data, sort_keys=True)


def key_variables(flow: Any) -> list[str]:
    """The environment variables holding the gateway's JWT keys."""
    if flow.auth is None:
        return []
    return [v for v in (flow.auth.secret_env, flow.auth.public_key_env) if v]


def environment(flow: Any, otlp_endpoint: str) -> dict[str, str]:
    """What every meshflow container's environment holds: log format, OTLP endpoint."""
    env = {"MESHFLOW_LOG_FORMAT": flow.log_format}
    if flow.tracing:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
    return env


class PlainDumper(yaml.SafeDumper):
    """YAML without anchors: every service and manifest reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
