"""Kubernetes export of a Flow: the same sidecars, certificates scheme and observability as a
local Flow, for many machines.

Per deployment and shard, ``<deployment>-s<shard>``:

- a **Deployment** (``replicas`` pods), each pod holding the executor (on ``127.0.0.1:50051``,
  reachable only through its sidecar) and its Envoy sidecar (mTLS on ``:15000``, the gateway's
  identity only);
- a **headless Service**, so that the gateway's sidecar sees every pod (its cluster for the
  shard is STRICT_DNS on the Service's name, which resolves to every ready pod);
- a **ConfigMap** with the sidecar's Envoy bootstrap;
- a **PodDisruptionBudget** (one pod down at a time), and with ``hpa`` a
  **HorizontalPodAutoscaler** on CPU (not for stateful Executors, whose ``state_scope`` is not
  ``'none'``: each pod has its own workspace, so they run one pod per shard and refuse more).

The gateway is a Deployment + Service (gRPC 50051, HTTP 8080), with an **Ingress** when
``ingress_host`` is given. Certificates are **Secrets** (``kubernetes.io/tls`` plus ``ca.crt``)
made from the Flow's CA in ``OUTDIR/pki`` (kept out of the manifests' folder: apply them, do
not commit them), or cert-manager **Certificates** issued by a CA ``Issuer`` with
``cert_manager=True``. JWT keys are referenced from a Secret (``<flow>-jwt``), never embedded.
Probes run ``meshflow ping`` (the gRPC health service) inside the pod. ``kustomization.yaml``
lists every manifest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from meshflow.deploy.common import (
    EGRESS,
    GATEWAY_KEY_DIR,
    SIDECAR_ADMIN,
    SIGNING_DIR,
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
    UID,
    BuildContext,
    image_name,
    write_image,
)
from meshflow.deploy.secrets import (
    certificates,
    gateway_key_secret,
    k8s_name,
    signing_secret,
    tls_secret,
    write_secrets,
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

PKI = "/etc/meshflow/pki"


def _identity(flow: str, workload: str) -> WorkloadCert:
    return WorkloadCert(
        spiffe_id=spiffe_id(flow, workload),
        cert=f"{PKI}/tls.crt",
        key=f"{PKI}/tls.key",
        ca=f"{PKI}/ca.crt",
    )


def export_kubernetes(
    flow: HasSpec | FlowSpec,
    out_dir: str,
    *,
    namespace: str | None = None,
    cert_manager: bool = False,
    hpa: bool = False,
    ingress_host: str | None = None,
    otlp_endpoint: str = "http://jaeger-collector.observability:4317",
    context: str | None = None,
    dockerfile: str | None = None,
    image: str | None = None,
    extras: tuple[str, ...] = (),
) -> list[str]:
    """Write ``flow`` as Kubernetes manifests into ``out_dir``, and the ``Dockerfile`` of its
    image (default ``out_dir/Dockerfile``: build it from ``context``, the project folder, and
    push it as ``image``); return the files written."""
    flow = flow_spec(flow)
    if flow.mesh != "envoy":
        raise ConfigError("Kubernetes export needs mesh='envoy' (the sidecars are the mesh)")
    build_context = image_context(flow, context)
    for dep in flow.deployments:  # refused before anything is written
        _check_state(dep)
    image = image or image_name(flow.name)
    ns = namespace or k8s_name(flow.name)
    app = k8s_name(flow.name)
    tracing = bool(flow.tracing)
    os.makedirs(out_dir, exist_ok=True)
    docs: dict[str, list[dict[str, Any]]] = {}

    def labels(component: str, **extra: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/part-of": app,
            "app.kubernetes.io/managed-by": "meshflow",
            "app.kubernetes.io/component": component,
            **extra,
        }

    def meta(name: str, component: str, **extra: str) -> dict[str, Any]:
        return {"name": name, "namespace": ns, "labels": labels(component, **extra)}

    namespace_doc = {"apiVersion": "v1", "kind": "Namespace"}
    docs["namespace.yaml"] = [
        {**namespace_doc, "metadata": {"name": ns, "labels": labels("namespace")}}
    ]
    common_env = [{"name": k, "value": v} for k, v in environment(flow, otlp_endpoint).items()]
    workloads = ["gateway"] + [dep.name for dep in flow.deployments]
    if cert_manager:
        docs["certificates.yaml"] = certificates(flow.name, workloads, meta)
    gateway_id = spiffe_id(flow.name, "gateway")
    hub, hub_files = hub_images(flow, build_context, out_dir)
    site = _Site(flow, meta, image, common_env, otlp_endpoint, build_context, hpa, hub)
    nodes: list[Node] = []
    specs: list[ClusterSpec] = []
    for dep in flow.deployments:
        shards = []
        for shard in range(dep.shards):
            name, manifests = _shard(site, dep, shard, gateway_id)
            docs[f"{name}.yaml"] = manifests
            host = f"{name}.{ns}.svc.cluster.local"
            shards.append((f"{host}:{INGRESS_PORT}",))
            specs.append(
                shard_cluster(
                    dep, shard, spiffe_id(flow.name, dep.name), hosts=[(host, INGRESS_PORT)]
                )
            )
        nodes.append(node(dep, shards))
    gateway_args = gateway_command(flow, nodes, context=build_context)
    docs["gateway.yaml"] = _gateway(
        flow, meta, labels, image, gateway_args, specs, common_env, tracing, otlp_endpoint,
        ingress_host,
    )  # fmt: skip
    written = [write_secrets(flow, os.path.join(out_dir, "pki"), ns)]
    written += write_image(build_context, dockerfile or os.path.join(out_dir, "Dockerfile"), extras)
    written += hub_files
    path = _write_manifests(out_dir, flow.name, ns, app, docs, written)
    return [path, *written[1:], written[0]]


def _write_manifests(
    out_dir: str,
    flow: str,
    ns: str,
    app: str,
    docs: dict[str, list[dict[str, Any]]],
    written: list[str],
) -> str:
    """Write each manifest of ``docs`` (their paths appended to ``written``) and the
    ``kustomization.yaml`` listing them; return the latter's path."""
    for filename, manifests in docs.items():
        path = os.path.join(out_dir, filename)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"# Generated by meshflow from Flow {flow!r}: do not edit.\n")
            yaml.dump_all(manifests, fh, Dumper=PlainDumper, sort_keys=False, width=100)
        written.append(path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": ns,
        "labels": [{"pairs": {"app.kubernetes.io/part-of": app}}],
        "resources": list(docs),
    }
    path = os.path.join(out_dir, "kustomization.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        yaml.dump(kustomization, fh, Dumper=PlainDumper, sort_keys=False)
    return path


@dataclass(frozen=True)
class _Site:
    """What every shard's manifests share."""

    flow: FlowSpec
    meta: Callable[..., dict[str, Any]]
    image: str
    common_env: list[dict[str, Any]]
    otlp_endpoint: str
    build_context: BuildContext
    hpa: bool
    hub: Mapping[str, HubImage] = field(default_factory=dict)
    """Hub deployments: each runs its own image (``meshflow-hub-NAME:VERSION``)."""


def _shard(
    site: _Site, dep: DeploymentSpec, shard: int, gateway_id: str
) -> tuple[str, list[dict[str, Any]]]:
    """The manifests of one shard of ``dep``: its name and them."""
    flow, meta = site.flow, site.meta
    name = k8s_name(f"{dep.name}-s{shard}")
    select = {"meshflow.io/deployment": k8s_name(dep.name), "meshflow.io/shard": str(shard)}
    bootstrap = replica_sidecar(
        node=name,
        listen_port=INGRESS_PORT,
        listen_host="0.0.0.0",
        executor_socket=None,
        executor_port=EXECUTOR_PORT,
        identity=_identity(flow.name, dep.name),
        allowed_peers=[gateway_id],
        admin=SIDECAR_ADMIN,
        tracing=Tracing(f"sidecar {name}", site.otlp_endpoint) if flow.tracing else None,
    )
    hub = site.hub.get(dep.name)
    command = executor_command(
        flow, dep, shard, context=site.build_context, uses=hub.uses if hub else None
    )
    ports = [{"name": "mesh", "containerPort": INGRESS_PORT}]
    executor, pod_volumes, pod_annotations = _executor_pod(site, dep, name, command)
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(f"{name}-envoy", "sidecar-config", **select),
            "data": {"envoy.yaml": yaml.dump(bootstrap, Dumper=PlainDumper, sort_keys=False)},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name, "executor", **select),
            "spec": {
                "clusterIP": "None",  # headless: the name resolves to every pod
                "selector": select,
                "ports": [{"name": "grpc-mesh", "port": INGRESS_PORT, "targetPort": "mesh"}],
            },
        },
        _deployment(
            meta(name, "executor", **select),
            select,
            dep.replicas,
            [executor, _sidecar(f"{name}-envoy", ports)],
            pod_volumes,
            pod_annotations,
        ),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(name, "executor", **select),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": select}},
        },
    ]
    if site.hpa and dep.executor_class.state_scope == "none":  # stateful: fixed
        manifests.append(_hpa(meta(name, "executor", **select), dep.replicas))
    return name, manifests


def _executor_pod(
    site: _Site, dep: DeploymentSpec, name: str, command: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
    """The executor container of a shard's pods, their volumes and annotations."""
    flow, image, common_env = site.flow, site.image, site.common_env
    if dep.name in site.hub:
        image = site.hub[dep.name].tag
    executor = _container(
        "executor",
        image,
        command,
        common_env
        + [{"name": k, "value": v} for k, v in sorted(without_round_robin(dep.env).items())],
        EXECUTOR_PORT,
        [{"name": "workspace", "mountPath": "/workspace"}],
    )
    gpus = gpus_per_replica(dep.gpus, dep.env)
    if gpus:  # the device plugin picks them and sets CUDA_VISIBLE_DEVICES
        executor["resources"]["limits"]["nvidia.com/gpu"] = str(gpus)
    pod_volumes: list[dict[str, Any]] = [
        {"name": "workspace", "emptyDir": {}},
        {"name": "envoy", "configMap": {"name": f"{name}-envoy"}},
        {"name": "pki", "secret": {"secretName": tls_secret(dep.name)}},
    ]
    if flow.auth is not None:  # the gateway's public key: executors check vouchers
        executor["volumeMounts"].append(
            {"name": "gateway-key", "mountPath": GATEWAY_KEY_DIR, "readOnly": True}
        )
        pod_volumes.append(
            {"name": "gateway-key", "secret": {"secretName": gateway_key_secret(flow.name)}}
        )
    if flow.metrics:
        executor["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT}]
    pod_annotations = (
        {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}
        if flow.metrics
        else {}
    )
    return executor, pod_volumes, pod_annotations


def _probe(port: int) -> dict[str, Any]:
    return {"exec": {"command": ["meshflow", "ping", f"127.0.0.1:{port}"]}, "periodSeconds": 5}


def _container(
    name: str,
    image: str,
    args: list[str],
    env: list[dict[str, Any]],
    port: int,
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "readinessProbe": _probe(port),
        "livenessProbe": {**_probe(port), "initialDelaySeconds": 60, "failureThreshold": 6},
        "startupProbe": {**_probe(port), "failureThreshold": 60},
        "resources": {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        },
        "securityContext": _security(),
    }


def _sidecar(config_map: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "envoy",
        "image": ENVOY_IMAGE,
        "args": ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "warn"],
        "ports": ports,
        "volumeMounts": [
            {"name": "envoy", "mountPath": "/etc/envoy", "readOnly": True},
            {"name": "pki", "mountPath": PKI, "readOnly": True},
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": _security(),
    }


def _security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": False,
        "capabilities": {"drop": ["ALL"]},
    }


def _deployment(
    metadata: dict[str, Any],
    select: dict[str, str],
    replicas: int,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    annotations: dict[str, str],
) -> dict[str, Any]:
    template_meta: dict[str, Any] = {"labels": {**metadata["labels"], **select}}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": select},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "securityContext": {
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def _check_state(dep: DeploymentSpec) -> None:
    """Refuse several pods of a stateful Executor: each pod has its own workspace here."""
    cls = dep.executor_class
    if dep.replicas > 1 and cls.state_scope != "none":
        raise ConfigError(
            f"deployment {dep.name!r}: {cls.__name__} keeps state (state_scope="
            f"{cls.state_scope!r}) and each Kubernetes pod has a workspace of its own, so "
            f"{dep.replicas} replicas would each hold only the writes they served; export it "
            "with replicas=1 and scale with shards (polling 'ID' for writes)"
        )


def _hpa(metadata: dict[str, Any], replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": metadata["name"],
            },
            "minReplicas": replicas,
            "maxReplicas": max(replicas * 4, 2),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }


def _gateway(
    flow: FlowSpec,
    meta: Any,
    labels: Any,
    image: str,
    args: list[str],
    specs: list[ClusterSpec],
    common_env: list[dict[str, Any]],
    tracing: bool,
    otlp_endpoint: str,
    ingress_host: str | None,
) -> list[dict[str, Any]]:
    select = {"meshflow.io/deployment": "gateway"}
    env = list(common_env)
    for var in key_variables(flow):
        env.append(
            {
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": k8s_name(f"{flow.name}-jwt"), "key": var}},
            }
        )
    run = {"name": "run", "mountPath": "/run/meshflow"}
    mounts: list[dict[str, Any]] = [run]
    gateway_volumes: list[dict[str, Any]] = [
        {"name": "run", "emptyDir": {}},
        {"name": "envoy", "configMap": {"name": "gateway-envoy"}},
        {"name": "pki", "secret": {"secretName": tls_secret("gateway")}},
    ]
    if flow.auth is not None:  # the signing key: in the gateway's container alone
        mounts.append({"name": "signing", "mountPath": SIGNING_DIR, "readOnly": True})
        gateway_volumes.append(
            {"name": "signing", "secret": {"secretName": signing_secret(flow.name)}}
        )
    gateway = _container("gateway", image, args, env, GATEWAY_PORT, mounts)
    gateway["ports"] = [{"name": "grpc", "containerPort": GATEWAY_PORT}]
    if flow.graphql:
        gateway["ports"].append({"name": "http", "containerPort": HTTP_PORT})
    sidecar = _sidecar("gateway-envoy", [])
    sidecar["volumeMounts"].append(run)
    bootstrap = gateway_sidecar(
        node="gateway",
        listen_socket=EGRESS,
        identity=_identity(flow.name, "gateway"),
        clusters=specs,
        admin=SIDECAR_ADMIN,
        tracing=Tracing("sidecar gateway", otlp_endpoint) if tracing else None,
    )
    annotations = (
        {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}
        if flow.metrics
        else {}
    )
    out = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("gateway-envoy", "sidecar-config", **select),
            "data": {"envoy.yaml": yaml.dump(bootstrap, Dumper=PlainDumper, sort_keys=False)},
        },
        _deployment(
            meta("gateway", "gateway", **select),
            select,
            1,
            [gateway, sidecar],
            gateway_volumes,
            annotations,
        ),
        _gateway_service(meta("gateway", "gateway", **select), select, flow.graphql),
    ]
    if ingress_host:
        if not flow.graphql:
            raise ConfigError("an Ingress needs the GraphQL (HTTP) door: Flow(graphql=True)")
        out.append(_ingress(ingress_host, meta("gateway", "gateway", **select)))
    return out


def _ingress(host: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """An Ingress sending every path of ``host`` to the gateway's HTTP door."""
    backend = {"service": {"name": "gateway", "port": {"name": "http"}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": {"rules": [{"host": host, "http": {"paths": [path]}}]},
    }


def _gateway_service(
    metadata: dict[str, Any], select: dict[str, str], graphql: bool
) -> dict[str, Any]:
    """The gateway's Service: gRPC, and HTTP with the GraphQL door."""
    ports = [{"name": "grpc", "port": GATEWAY_PORT, "targetPort": "grpc"}]
    if graphql:
        ports.append({"name": "http", "port": HTTP_PORT, "targetPort": "http"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"selector": select, "ports": ports},
    }
