"""What the docker-compose and Kubernetes exports share: the launches of executors and the
gateway in a container, and the gateway sidecar's view of a shard."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, Protocol

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
from meshflow.gateway.topology import Node, Topology, check_spec
from meshflow.mesh.config import Admin
from meshflow.observability.tracing import sampling_arg
from meshflow.spec.auth import JWTAuth
from meshflow.spec.federation import Federation
from meshflow.spec.flow import DeploymentSpec, FlowSpec
from meshflow.spec.launch import ExecutorLaunch, GatewayLaunch, Observability
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import PersistedQueries

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


class HasSpec(Protocol):
    """What exports take besides a FlowSpec: a :class:`~meshflow.Flow` (its ``spec``). The
    exports sit below the Flow builder and never import it."""

    @property
    def spec(self) -> FlowSpec: ...


def flow_spec(flow: HasSpec | FlowSpec) -> FlowSpec:
    """The spec an export writes out, its graph checked."""
    spec = flow if isinstance(flow, FlowSpec) else flow.spec
    check_spec(spec)
    return spec


def image_context(spec: FlowSpec, folder: str | None) -> BuildContext:
    """The build context of ``spec``'s image, every path and package the Flow names checked
    against it before anything is written."""
    context = BuildContext.at(folder)
    for dep in spec.deployments:
        if not ref(dep).startswith("hub://"):  # a hub executor has an image of its own
            context.uses(ref(dep), dep.name)
    for prefix, static in (spec.static or {}).items():
        context.inside(static, f"static[{prefix!r}]")
    if spec.persisted_queries.manifest is not None:
        context.inside(spec.persisted_queries.manifest, _MANIFEST)
    return context


_MANIFEST = "persisted_queries.manifest"


def ref(dep: DeploymentSpec) -> str:
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
    flow: FlowSpec,
    dep: DeploymentSpec,
    shard: int,
    replica: int | None = None,
    *,
    context: BuildContext | None = None,
    uses: str | None = None,
) -> list[str]:
    """``meshflow executor ...`` for one replica (``replica`` None: any pod of the shard);
    with ``context``, ``uses`` as the image finds it; ``uses`` given: that class (a hub
    executor's, inside its own image)."""
    if uses is None:
        uses = ref(dep) if context is None else context.uses(ref(dep), dep.name)
    launch = ExecutorLaunch.of(
        dep,
        shard,
        replica,
        uses=uses,
        address=f"127.0.0.1:{EXECUTOR_PORT}",
        workspace="/workspace",
        gateway_key_file=GATEWAY_PUBLIC_KEY if flow.auth is not None else None,
        **_observability(flow),
    )
    return launch.to_argv()


def _observability(flow: FlowSpec, *, gateway: bool = False) -> dict[str, Any]:
    sampling = sampling_arg(flow.tracing) if gateway and flow.tracing else None
    return Observability.options_of(
        flow, metrics_host="0.0.0.0", metrics_port=METRICS_PORT, trace_sampling=sampling
    )


def node(dep: DeploymentSpec, shards: Sequence[tuple[str, ...]]) -> Node:
    return Node(
        name=dep.name,
        needs=dep.needs,
        shards=tuple(shards),
        polling=dep.polling,
        timeout=dep.timeout,
    )


def gateway_command(
    flow: FlowSpec, nodes: list[Node], *, context: BuildContext | None = None
) -> list[str]:
    """``meshflow gateway ...`` with the topology inline, behind its sidecar's socket; with
    ``context``, static folders and the persisted query manifest as the image holds them."""
    static = None
    if flow.static and context is not None:
        static = {
            prefix: context.inside(folder, f"static[{prefix!r}]")
            for prefix, folder in sorted(flow.static.items())
        }
    persisted = flow.persisted_queries
    if persisted.manifest is not None and context is not None:
        manifest = context.inside(persisted.manifest, _MANIFEST)
        persisted = dataclasses.replace(persisted, manifest=manifest)
    if flow.auth is not None:
        check_container_auth(flow.auth)
    launch = GatewayLaunch(
        topology=json.dumps(Topology(tuple(nodes)).to_dict(), sort_keys=True),
        host="0.0.0.0",
        port=GATEWAY_PORT,
        mesh="envoy",
        egress=f"unix:{EGRESS}",
        max_in_flight=flow.max_in_flight,
        admission=flow.admission,
        max_request_bytes=flow.max_request_bytes,
        graphql_port=HTTP_PORT if flow.graphql else None,
        graphql_limits=flow.graphql_limits if flow.graphql else GraphQLLimits(),
        persisted_queries=persisted if flow.graphql else PersistedQueries(),
        federation=flow.federation if flow.graphql else Federation(),
        cors=flow.cors if flow.graphql else (),
        static=static,
        auth=flow.auth,
        signing_key_file=SIGNING_KEY if flow.auth is not None else None,
        **_observability(flow, gateway=True),
    )
    return launch.to_argv()


def check_container_auth(auth: JWTAuth) -> None:
    """The gateway's auth options; keys must come from the environment in containers."""
    for key in ("secret_file", "public_key_file", "jwks_file"):
        if getattr(auth, key):
            raise ConfigError(
                f"auth.{key} names a file on this machine; in containers give the key by "
                "environment (secret_env, public_key_env), which the export passes through"
            )


def key_variables(flow: FlowSpec) -> list[str]:
    """The environment variables holding the gateway's JWT keys."""
    if flow.auth is None:
        return []
    return [v for v in (flow.auth.secret_env, flow.auth.public_key_env) if v]


def environment(flow: FlowSpec, otlp_endpoint: str) -> dict[str, str]:
    """What every meshflow container's environment holds: log format, OTLP endpoint."""
    env = {"MESHFLOW_LOG_FORMAT": flow.log_format}
    if flow.tracing:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
    return env


class PlainDumper(yaml.SafeDumper):
    """YAML without anchors: every service and manifest reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
