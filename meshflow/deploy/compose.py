"""docker-compose export of a Flow.

Containers, per Flow:

- ``certs``: a one-shot job that creates the Flow's CA and one certificate per workload
  (SPIFFE ``spiffe://meshflow/<flow>/<workload>``, as a local Flow does) into the ``pki``
  volume;
- per executor replica ``<deployment>-s<shard>-r<replica>``: the executor on
  ``127.0.0.1:50051`` and, sharing its network namespace (``network_mode: service:...``),
  its Envoy sidecar: mTLS on ``:15000``, only the gateway's identity admitted;
- ``gateway`` and ``gateway-sidecar``: the gateway's calls leave through a unix socket in a
  shared volume to its sidecar, which holds one cluster per shard listing every replica by
  DNS name (STRICT_DNS), with the Flow's retries, health checks, outlier detection and
  circuit breakers;
- ``jaeger`` (OTLP on), ``prometheus`` (scraping the gateway and every executor) and
  ``grafana`` (the provisioning and dashboard of ``observability/grafana``).

Files: ``docker-compose.yml``; ``envoy/compose/<service>.yaml`` (Envoy bootstraps);
``observability/compose/prometheus.yml``. Host ports bind to loopback only.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import yaml

from meshflow.deploy.common import (
    EGRESS,
    GATEWAY_KEY_DIR,
    GATEWAY_PUBLIC_KEY,
    SIDECAR_ADMIN,
    SIGNING_DIR,
    SIGNING_KEY,
    HasSpec,
    PlainDumper,
    environment,
    executor_command,
    flow_spec,
    gateway_command,
    image_context,
    key_variables,
    node,
)
from meshflow.deploy.hub_images import HubImage, hub_images
from meshflow.deploy.images import (
    ENVOY_IMAGE,
    EXECUTOR_PORT,
    GATEWAY_PORT,
    HTTP_PORT,
    INGRESS_PORT,
    METRICS_PORT,
    STATS_PORT,
    UID,
    BuildContext,
    image_name,
    observability_assets,
    write_image,
)
from meshflow.errors import ConfigError
from meshflow.gateway.topology import Node
from meshflow.mesh.certs import WorkloadCert, spiffe_id
from meshflow.mesh.config import (
    ClusterSpec,
    Tracing,
    gateway_sidecar,
    replica_sidecar,
    shard_cluster,
)
from meshflow.spec.devices import gpus_per_replica, without_round_robin
from meshflow.spec.flow import DeploymentSpec, FlowSpec

JAEGER_IMAGE = "jaegertracing/all-in-one:1.62.0"
PROMETHEUS_IMAGE = "prom/prometheus:v2.55.1"
GRAFANA_IMAGE = "grafana/grafana:11.3.0"
USER = f"{UID}:{UID}"
PKI = "/pki"
CA_DIR = "/ca"
"""The CA's key: in a volume only the certs job mounts."""
OTLP = "http://jaeger:4317"


def _identity(flow: str, workload: str) -> WorkloadCert:
    return WorkloadCert(
        spiffe_id=spiffe_id(flow, workload),
        cert=f"{PKI}/{workload}.crt",
        key=f"{PKI}/{workload}.key",
        ca=f"{PKI}/ca.crt",
    )


def _label(dep: DeploymentSpec, shard: int, replica: int) -> str:
    return f"{dep.name}-s{shard}-r{replica}".lower().replace("_", "-")


def export_compose(
    flow: HasSpec | FlowSpec,
    path: str,
    *,
    context: str | None = None,
    dockerfile: str | None = None,
    image: str | None = None,
    extras: tuple[str, ...] = (),
) -> list[str]:
    """Write ``flow`` as ``path`` (a docker-compose file), its Envoy and Prometheus files next
    to it, and the image's ``Dockerfile`` (``dockerfile``, default next to ``path``); return
    every file written.

    ``context``: the project folder copied into the image (default: the working directory);
    ``image``: the tag of the image built (default ``meshflow-<flow>:<version>``);
    ``extras``: meshflow's extras the image installs (``index``, ``models``).
    """
    spec = flow_spec(flow)
    if spec.mesh != "envoy":
        raise ConfigError("docker-compose export needs mesh='envoy' (the sidecars are the mesh)")
    build_context = image_context(spec, context)
    out_dir = os.path.dirname(os.path.abspath(path))
    dockerfile = os.path.abspath(dockerfile or os.path.join(out_dir, "Dockerfile"))
    export = _Export(spec, out_dir, build_context)
    export.written += write_image(build_context, dockerfile, extras)
    export.hub, hub_files = hub_images(spec, build_context, out_dir)
    export.written += hub_files
    export.build = {
        "image": image or image_name(spec.name),
        "build": {
            "context": _relative(build_context.root, out_dir),
            "dockerfile": os.path.relpath(dockerfile, build_context.root),
        },
    }
    export.add_certs()
    nodes, clusters = export.add_replicas()
    export.add_gateway(nodes, clusters)
    return export.write(path)


class _Export:
    """The services, volumes and files of one docker-compose export, built up in order."""

    def __init__(self, spec: FlowSpec, out_dir: str, build_context: BuildContext) -> None:
        self.spec = spec
        self.out_dir = out_dir
        self.context = build_context
        self.envoy_dir = os.path.join(out_dir, "envoy", "compose")
        self.obs_dir = os.path.join(out_dir, "observability", "compose")
        os.makedirs(self.envoy_dir, exist_ok=True)
        os.makedirs(self.obs_dir, exist_ok=True)
        for old in os.listdir(self.envoy_dir):  # bootstraps of replicas a previous export had
            path_old = os.path.join(self.envoy_dir, old)
            with open(path_old, encoding="utf-8") as fh:
                generated = fh.readline().startswith("# Generated by meshflow")
            if generated:
                os.unlink(path_old)
        self.written: list[str] = []
        self.build: dict[str, Any] = {}
        self.hub: dict[str, HubImage] = {}
        """Hub deployments: each has an image of its own."""
        self.services: dict[str, Any] = {}
        self.volumes: dict[str, Any] = {"pki": {}, "ca": {}, "gateway-run": {}}
        self.scrape: list[str] = []
        self.common_env = environment(spec, OTLP)
        self.certs_done = {"certs": {"condition": "service_completed_successfully"}}

    def envoy_file(self, service: str, bootstrap: dict[str, Any]) -> str:
        target = os.path.join(self.envoy_dir, f"{service}.yaml")
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(f"# Generated by meshflow from Flow {self.spec.name!r}: do not edit.\n")
            yaml.safe_dump(bootstrap, fh, sort_keys=False)
        self.written.append(target)
        return f"./envoy/compose/{service}.yaml"

    def sidecar_tracing(self, service: str) -> Tracing | None:
        return Tracing(service=f"sidecar {service}", endpoint=OTLP) if self.spec.tracing else None

    def add_certs(self) -> None:
        spec = self.spec
        certs_command = ["certs", "--flow", spec.name, "--out", PKI, "--ca-dir", CA_DIR]
        certs_volumes = [f"pki:{PKI}", f"ca:{CA_DIR}"]
        if spec.auth is not None:
            certs_command += [
                "--signing-key", SIGNING_KEY, "--signing-public-key", GATEWAY_PUBLIC_KEY
            ]  # fmt: skip
            certs_volumes += [f"signing:{SIGNING_DIR}", f"gateway-key:{GATEWAY_KEY_DIR}"]
            self.volumes.update({"signing": {}, "gateway-key": {}})
        self.services["certs"] = {
            **self.build,
            "user": USER,
            "command": certs_command + ["gateway"] + [dep.name for dep in spec.deployments],
            "volumes": certs_volumes,
            "restart": "no",
        }

    def add_replicas(self) -> tuple[list[Node], list[ClusterSpec]]:
        """Every replica's executor and sidecar; the gateway's view of them."""
        nodes: list[Node] = []
        clusters: list[ClusterSpec] = []
        for dep in self.spec.deployments:
            volume = f"workspace-{dep.name.lower().replace('_', '-')}"
            self.volumes[volume] = {}
            shards = []
            for shard in range(dep.shards):
                hosts = [
                    (self.add_replica(dep, shard, replica, volume), INGRESS_PORT)
                    for replica in range(dep.replicas)
                ]
                shards.append(tuple(f"{h}:{p}" for h, p in hosts))
                identity = spiffe_id(self.spec.name, dep.name)
                clusters.append(shard_cluster(dep, shard, identity, hosts=hosts))
            nodes.append(node(dep, shards))
        return nodes, clusters

    def add_replica(self, dep: DeploymentSpec, shard: int, replica: int, volume: str) -> str:
        spec = self.spec
        label = _label(dep, shard, replica)
        hub = self.hub.get(dep.name)
        command = executor_command(
            spec, dep, shard, replica, context=self.context, uses=hub.uses if hub else None
        )
        if spec.metrics:
            self.scrape.append(f"{label}:{METRICS_PORT}")
        self.services[label] = {
            **(hub.compose_build(self.out_dir) if hub is not None else self.build),
            "user": USER,
            "command": command,
            "environment": {**self.common_env, **without_round_robin(dep.env)},
            # The gateway's public key only: executors check its vouchers.
            "volumes": [f"{volume}:/workspace"]
            + ([f"gateway-key:{GATEWAY_KEY_DIR}:ro"] if spec.auth is not None else []),
            "healthcheck": _ping(EXECUTOR_PORT),
            "restart": "unless-stopped",
        }
        gpus = gpus_per_replica(dep.gpus, dep.env)
        if gpus:
            self.services[label]["deploy"] = {
                "resources": {
                    "reservations": {
                        "devices": [{"driver": "nvidia", "count": gpus, "capabilities": ["gpu"]}]
                    }
                }
            }
        if spec.auth is not None:
            self.services[label]["depends_on"] = {**self.certs_done}
        config = self.envoy_file(
            f"{label}-sidecar",
            replica_sidecar(
                node=label,
                listen_port=INGRESS_PORT,
                listen_host="0.0.0.0",
                executor_socket=None,
                executor_port=EXECUTOR_PORT,
                identity=_identity(spec.name, dep.name),
                allowed_peers=[spiffe_id(spec.name, "gateway")],
                admin=SIDECAR_ADMIN,
                tracing=self.sidecar_tracing(label),
            ),
        )
        self.services[f"{label}-sidecar"] = _sidecar(label, config, {**self.certs_done})
        return label

    def add_gateway(self, nodes: list[Node], clusters: list[ClusterSpec]) -> None:
        spec = self.spec
        gateway = gateway_command(spec, nodes, context=self.context)  # static files in the image
        gateway_volumes = ["gateway-run:/run/meshflow"]
        if spec.auth is not None:  # the signing key: in the gateway's container alone
            gateway_volumes.append(f"signing:{SIGNING_DIR}:ro")
        if spec.metrics:
            self.scrape.insert(0, f"gateway:{METRICS_PORT}")
        ports = [f"127.0.0.1:{spec.port or GATEWAY_PORT}:{GATEWAY_PORT}"]
        if spec.graphql:
            ports.append(f"127.0.0.1:{spec.graphql_port or HTTP_PORT}:{HTTP_PORT}")
        gateway_env = {**self.common_env}
        for name in key_variables(spec):
            gateway_env[name] = f"${{{name}:?set {name} (the JWT key) in the environment}}"
        replicas = (
            _label(d, s, r) for d in spec.deployments for s in range(d.shards)
            for r in range(d.replicas)
        )  # fmt: skip
        self.services["gateway"] = {
            **self.build,
            "user": USER,
            "command": gateway,
            "environment": gateway_env,
            "ports": ports,
            "volumes": gateway_volumes,
            "healthcheck": _ping(GATEWAY_PORT),
            "depends_on": {label: {"condition": "service_healthy"} for label in replicas},
            "restart": "unless-stopped",
        }
        config = self.envoy_file(
            "gateway-sidecar",
            gateway_sidecar(
                node="gateway",
                listen_socket=EGRESS,
                identity=_identity(spec.name, "gateway"),
                clusters=clusters,
                admin=SIDECAR_ADMIN,
                tracing=self.sidecar_tracing("gateway"),
            ),
        )
        sidecar = _sidecar("gateway", config, {**self.certs_done})
        sidecar["volumes"].append("gateway-run:/run/meshflow")
        self.services["gateway-sidecar"] = sidecar

    def write(self, path: str) -> list[str]:
        """The observability files and the compose file; every file written."""
        self.services.update(_observability(self.scrape))
        # A sidecar shares its owner's network namespace: it is reached by the owner's name.
        sidecars = [
            f"{name.removesuffix('-sidecar')}:{STATS_PORT}"
            for name in self.services
            if name.endswith("-sidecar")
        ]
        self.written.append(_write_prometheus(self.obs_dir, self.spec.name, self.scrape, sidecars))
        self.written.append(_write_datasources(self.obs_dir))
        grafana = os.path.join(self.out_dir, "observability", "grafana")
        source = os.path.join(observability_assets(), "grafana")
        if os.path.abspath(grafana) != os.path.abspath(source):
            shutil.copytree(source, grafana, dirs_exist_ok=True)
        # No top-level `name:` (docker-compose 1.x refuses it): `docker compose -p NAME` sets it.
        document = {"services": self.services, "volumes": self.volumes}
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(
                f"# Generated by meshflow from Flow {self.spec.name!r}: do not edit; re-export "
                "with\n# `meshflow export docker-compose FLOW.yml OUTDIR`. See docs/deploy.md.\n"
            )
            yaml.dump(document, fh, Dumper=PlainDumper, sort_keys=False, width=100)
        return [path, *self.written]


def _relative(folder: str, base: str) -> str:
    relative = os.path.relpath(folder, base)
    if relative == "." or relative.startswith(".."):
        return relative
    return f"./{relative}"


def _ping(port: int) -> dict[str, Any]:
    return {
        "test": ["CMD", "meshflow", "ping", f"127.0.0.1:{port}"],
        "interval": "5s",
        "timeout": "3s",
        "retries": 12,
        "start_period": "60s",
    }


def _http_check(url: str) -> dict[str, Any]:
    return {"test": ["CMD", "wget", "-qO-", url], "interval": "10s", "timeout": "3s", "retries": 5}


def _sidecar(owner: str, config: str, depends: dict[str, Any]) -> dict[str, Any]:
    return {
        "image": ENVOY_IMAGE,
        "user": USER,
        # In the owner's network namespace: it reaches the executor on 127.0.0.1, and other
        # services reach it by the owner's name.
        "network_mode": f"service:{owner}",
        "command": ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "warn"],
        "volumes": [f"{config}:/etc/envoy/envoy.yaml:ro", f"pki:{PKI}:ro"],
        "depends_on": {**depends, owner: {"condition": "service_started"}},
        "restart": "unless-stopped",
    }


def _observability(scrape: list[str]) -> dict[str, Any]:
    return {
        "jaeger": {
            "image": JAEGER_IMAGE,
            "environment": {"COLLECTOR_OTLP_ENABLED": "true"},
            "ports": ["127.0.0.1:16686:16686"],
            "healthcheck": _http_check("http://127.0.0.1:14269/"),
            "restart": "unless-stopped",
        },
        "prometheus": {
            "image": PROMETHEUS_IMAGE,
            "command": ["--config.file=/etc/prometheus/prometheus.yml"],
            "volumes": ["./observability/compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
            "ports": ["127.0.0.1:9090:9090"],
            "healthcheck": _http_check("http://127.0.0.1:9090/-/ready"),
            "restart": "unless-stopped",
        },
        "grafana": {
            "image": GRAFANA_IMAGE,
            "environment": {
                "GF_AUTH_ANONYMOUS_ENABLED": "true",
                "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
            },
            "volumes": [
                "./observability/compose/grafana-datasources.yml:"
                "/etc/grafana/provisioning/datasources/meshflow.yml:ro",
                "./observability/grafana/provisioning/dashboards:"
                "/etc/grafana/provisioning/dashboards:ro",
                "./observability/grafana/dashboards:/var/lib/grafana/dashboards:ro",
            ],
            "ports": ["127.0.0.1:3000:3000"],
            "depends_on": ["prometheus"],
            "healthcheck": _http_check("http://127.0.0.1:3000/api/health"),
            "restart": "unless-stopped",
        },
    }


def _write_datasources(directory: str) -> str:
    """Grafana's data sources by service name (the compose network, not the host's)."""
    config = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": "prometheus",
                "type": "prometheus",
                "access": "proxy",
                "url": "http://prometheus:9090",
                "isDefault": True,
            },
            {
                "name": "Jaeger",
                "uid": "jaeger",
                "type": "jaeger",
                "access": "proxy",
                "url": "http://jaeger:16686",
            },
        ],
    }
    path = os.path.join(directory, "grafana-datasources.yml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# Generated by meshflow: Grafana data sources inside the compose network.\n")
        yaml.safe_dump(config, fh, sort_keys=False)
    return path


def _write_prometheus(directory: str, flow: str, targets: list[str], sidecars: list[str]) -> str:
    config = {
        "global": {"scrape_interval": "5s"},
        "scrape_configs": [
            {
                "job_name": f"meshflow-{flow}",
                "static_configs": [{"targets": targets, "labels": {"flow": flow}}],
            },
            {
                # Each sidecar's stats listener: GET /stats/prometheus (its admin is a socket).
                "job_name": f"meshflow-{flow}-sidecars",
                "metrics_path": "/stats/prometheus",
                "static_configs": [
                    {"targets": sidecars, "labels": {"flow": flow, "component": "sidecar"}}
                ],
            },
        ],
    }
    path = os.path.join(directory, "prometheus.yml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"# Generated by meshflow from Flow {flow!r}: do not edit.\n")
        yaml.safe_dump(config, fh, sort_keys=False)
    return path
