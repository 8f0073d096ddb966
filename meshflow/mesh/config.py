"""Envoy configuration of a Flow's sidecars: the one place it is generated.

- The **gateway sidecar** (egress) listens on a unix socket for the gateway. Each cluster is
  one deployment shard, named ``<deployment>.shard<i>``; the gateway picks it with the gRPC
  ``:authority``. Endpoints come from one EDS file per cluster, swapped atomically when
  replicas change, so scaling never restarts Envoy. Clusters speak HTTP/2 with mTLS to the
  replica sidecars and carry the deployment's load balancing, retries (on another host),
  timeouts, active gRPC health checks, outlier detection and circuit breakers.
- Each **replica sidecar** (ingress) listens on a unix socket (a local Flow) or on its
  container's TCP port (the exports), requires a client certificate of the Flow's CA whose
  SPIFFE id is the gateway's, and forwards to its executor.

Admin interfaces listen only on a unix socket of mode 0600 (:mod:`meshflow.mesh.admin`);
each sidecar has a ``stats`` listener that serves ``GET /stats/prometheus`` and ``GET /ready``
from it over HTTP, and nothing else.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml

from meshflow.mesh.admin import STATS_LISTENER, STATS_PATHS
from meshflow.mesh.certs import WorkloadCert
from meshflow.spec.names import cluster_name
from meshflow.spec.policy import (
    CircuitBreaker,
    HealthCheck,
    LoadBalancing,
    OutlierDetection,
    RetryPolicy,
)

_HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_DOWNSTREAM_TLS = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
_PREVIOUS_HOSTS = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
_ASSIGNMENT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_LB = {"least_request": "LEAST_REQUEST", "round_robin": "ROUND_ROBIN", "random": "RANDOM"}


@dataclass(frozen=True)
class ClusterSpec:
    """One shard of a deployment as the gateway sidecar sees it."""

    name: str
    peer_id: str
    """SPIFFE id the replicas' certificates must carry."""
    eds_path: str
    """The EDS file listing the replicas (local Flows); empty with ``hosts``."""
    lb: LoadBalancing
    retries: RetryPolicy
    health_check: HealthCheck
    outlier_detection: OutlierDetection
    circuit_breaker: CircuitBreaker
    timeout: float | None
    hosts: tuple[tuple[str, int], ...] = ()
    """The replicas' sidecars by DNS name and port (containers): a STRICT_DNS cluster."""


def shard_cluster(
    deployment: Any,
    shard: int,
    peer_id: str,
    *,
    eds_path: str = "",
    hosts: Sequence[tuple[str, int]] = (),
) -> ClusterSpec:
    """The gateway sidecar's cluster for one shard of ``deployment`` (a Flow's
    :class:`~meshflow.flow.deployment.Deployment`), with its mesh policies; replicas from an
    EDS file (local Flows) or by DNS name (containers)."""
    return ClusterSpec(
        name=cluster_name(deployment.name, shard),
        peer_id=peer_id,
        eds_path=eds_path,
        lb=deployment.lb,
        retries=deployment.retries,
        health_check=deployment.health_check,
        outlier_detection=deployment.outlier_detection,
        circuit_breaker=deployment.circuit_breaker,
        timeout=deployment.timeout,
        hosts=tuple(hosts),
    )


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def _tls_context(identity: WorkloadCert, peers: Sequence[str]) -> dict[str, Any]:
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": identity.cert},
                "private_key": {"filename": identity.key},
            }
        ],
        "validation_context": {
            "trusted_ca": {"filename": identity.ca},
            "match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": peer}} for peer in peers
            ],
        },
        "alpn_protocols": ["h2"],
    }


def _http2_options() -> dict[str, Any]:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _HTTP_OPTIONS,
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }


COLLECTOR = "opentelemetry_collector"


@dataclass(frozen=True)
class Tracing:
    """Envoy's OpenTelemetry tracer: the OTLP/gRPC collector and this sidecar's service name."""

    service: str
    endpoint: str
    """``http://host:port`` of the collector (the same one the Python processes export to)."""

    @property
    def address(self) -> tuple[str, int]:
        url = urlsplit(self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}")
        return url.hostname or "127.0.0.1", url.port or 4317


def _tracing(tracing: Tracing) -> dict[str, Any]:
    return {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": COLLECTOR}, "timeout": "1s"},
                "service_name": tracing.service,
            },
        },
        # The gateway decides which requests are traced: it sends x-client-trace-id on those
        # (client_sampling: 100% by default), and Envoy samples no other request at random.
        "random_sampling": {"value": 0},
    }


def _tracer_runtime(tracing: Tracing | None) -> dict[str, Any]:
    """Bootstrap runtime for Envoy's OpenTelemetry tracer: export in batches of up to 512
    spans, or every second, instead of its defaults (a gRPC export every 5 spans), which cost
    the sidecars more CPU than the spans themselves (benchmarks/observability_bench.py)."""
    if tracing is None:
        return {}
    layer = {
        "tracing.opentelemetry.min_flush_spans": 512,
        "tracing.opentelemetry.flush_interval_ms": 1000,
    }
    return {"layered_runtime": {"layers": [{"name": "tracing", "static_layer": layer}]}}


def _collector(tracing: Tracing) -> dict[str, Any]:
    host, port = tracing.address
    return {
        "name": COLLECTOR,
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _http2_options(),
        "load_assignment": {
            "cluster_name": COLLECTOR,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": host, "port_value": port}}
                            }
                        }
                    ]
                }
            ],
        },
    }


def _hcm(
    stat_prefix: str, virtual_hosts: list[dict[str, Any]], tracing: Tracing | None = None
) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": stat_prefix,
            "codec_type": "HTTP2",
            "http2_protocol_options": {},
            # Requests may take as long as their gRPC deadline says.
            "stream_idle_timeout": "0s",
            # Nothing downstream reads it; tracing propagates W3C headers instead.
            "generate_request_id": False,
            "route_config": {"name": stat_prefix, "virtual_hosts": virtual_hosts},
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": _ROUTER, "suppress_envoy_headers": True},
                }
            ],
        },
    }
    if tracing is not None:
        # Envoy decides by x-request-id, which it does not generate here: the gateway sends
        # one (with x-client-trace-id) on the requests it traces, and only those are traced.
        hcm["typed_config"]["tracing"] = _tracing(tracing)
    return hcm


def stat_name(cluster: str) -> str:
    """The name a cluster has in Envoy's stats (and Prometheus' ``envoy_cluster_name``)."""
    return cluster.replace(".", "_")


ADMIN_CLUSTER = "envoy_admin"


@dataclass(frozen=True)
class Admin:
    """Where a sidecar's admin interface and its stats listener are."""

    socket: str
    """The admin's unix socket (created with mode 0600)."""
    stats_port: int = 0
    """The stats listener's port (0: Envoy picks one, learnt from the admin)."""
    stats_host: str = "127.0.0.1"


def _admin(admin: Admin) -> dict[str, Any]:
    return {"address": {"pipe": {"path": admin.socket, "mode": 0o600}}}


def _stats_listener(admin: Admin) -> dict[str, Any]:
    """Prometheus and readiness over HTTP: GET of exactly these admin paths, else 404."""
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    routes: list[dict[str, Any]] = [
        {"match": {"path": path, "headers": get}, "route": {"cluster": ADMIN_CLUSTER}}
        for path in STATS_PATHS
    ]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": STATS_LISTENER,
            "route_config": {
                "name": STATS_LISTENER,
                "virtual_hosts": [{"name": STATS_LISTENER, "domains": ["*"], "routes": routes}],
            },
            "http_filters": [
                {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}
            ],
        },
    }
    return {
        "name": STATS_LISTENER,
        "address": {
            "socket_address": {"address": admin.stats_host, "port_value": admin.stats_port}
        },
        "filter_chains": [{"filters": [hcm]}],
    }


def _admin_cluster(admin: Admin) -> dict[str, Any]:
    return {
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": admin.socket}}}}]}
            ],
        },
    }


def _route(spec: ClusterSpec) -> dict[str, Any]:
    retries = spec.retries
    route: dict[str, Any] = {
        "cluster": spec.name,
        # 0s: no Envoy timeout of its own beyond the deployment's and the caller's deadline.
        "timeout": _seconds(spec.timeout) if spec.timeout else "0s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
    }
    if retries.attempts > 1:
        policy: dict[str, Any] = {
            "retry_on": ",".join(retries.retry_on),
            "num_retries": retries.attempts - 1,
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": _PREVIOUS_HOSTS},
                }
            ],
            "host_selection_retry_max_attempts": 5,
            "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.25s"},
        }
        if retries.per_try_timeout:
            policy["per_try_timeout"] = _seconds(retries.per_try_timeout)
        route["retry_policy"] = policy
    # The span's name when tracing: which shard the call went to.
    return {
        "match": {"prefix": "/"},
        "route": route,
        "decorator": {"operation": f"egress {spec.name}"},
    }


def _cluster(spec: ClusterSpec, identity: WorkloadCert) -> dict[str, Any]:
    hc, od, cb = spec.health_check, spec.outlier_detection, spec.circuit_breaker
    return {
        "name": spec.name,
        # Envoy's Prometheus tags split stat names at dots: "a.shard0" would be read as
        # cluster "a", stat "shard0_upstream_rq_total". Stats use "a_shard0" instead.
        "alt_stat_name": stat_name(spec.name),
        **_discovery(spec),
        "connect_timeout": "1s",
        "lb_policy": _LB[spec.lb],
        # A replica taken out of the endpoint file (scale down) stops getting calls at once,
        # healthy or not; calls it already holds finish.
        "ignore_health_on_host_removal": True,
        "typed_extension_protocol_options": _http2_options(),
        "health_checks": [
            {
                "timeout": _seconds(hc.timeout),
                "interval": _seconds(hc.interval),
                "no_traffic_interval": _seconds(hc.no_traffic_interval),
                "no_traffic_healthy_interval": _seconds(hc.no_traffic_healthy_interval),
                "unhealthy_threshold": hc.unhealthy_threshold,
                "healthy_threshold": hc.healthy_threshold,
                "grpc_health_check": {},
            }
        ],
        "outlier_detection": {
            # A replica that cannot even be connected to is ejected at its first failure, so
            # that the retry of that very call goes elsewhere (least-request would otherwise
            # keep choosing the replica that fails fastest).
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "enforcing_consecutive_local_origin_failure": 100,
            "consecutive_5xx": od.consecutive_failures,
            "consecutive_gateway_failure": od.consecutive_failures,
            "enforcing_consecutive_gateway_failure": 100,
            "interval": _seconds(od.interval),
            "base_ejection_time": _seconds(od.base_ejection_time),
            "max_ejection_percent": od.max_ejection_percent,
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": cb.max_connections,
                    "max_pending_requests": cb.max_pending_requests,
                    "max_requests": cb.max_requests,
                    "max_retries": cb.max_retries,
                }
            ]
        },
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _UPSTREAM_TLS,
                "common_tls_context": _tls_context(identity, [spec.peer_id]),
            },
        },
    }


def _discovery(spec: ClusterSpec) -> dict[str, Any]:
    """Where a cluster's replicas come from: an EDS file, or DNS names (one per replica)."""
    if spec.hosts:
        return {
            "type": "STRICT_DNS",
            "load_assignment": {
                "cluster_name": spec.name,
                "endpoints": [{"lb_endpoints": [_endpoint(h, p) for h, p in spec.hosts]}],
            },
        }
    return {
        "type": "EDS",
        "eds_cluster_config": {
            "eds_config": {
                "path_config_source": {"path": spec.eds_path},
                "resource_api_version": "V3",
            }
        },
    }


def _endpoint(host: str, port: int) -> dict[str, Any]:
    return {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}


def gateway_sidecar(
    *,
    node: str,
    listen_socket: str,
    identity: WorkloadCert,
    clusters: Sequence[ClusterSpec],
    admin: Admin,
    tracing: Tracing | None = None,
) -> dict[str, Any]:
    """Bootstrap of the gateway's egress sidecar."""
    virtual_hosts = [
        {"name": spec.name, "domains": [spec.name, f"{spec.name}:*"], "routes": [_route(spec)]}
        for spec in clusters
    ]
    return {
        "node": {"id": node, "cluster": "meshflow"},
        "admin": _admin(admin),
        **_tracer_runtime(tracing),
        "static_resources": {
            "listeners": [
                {
                    "name": "egress",
                    "address": {"pipe": {"path": listen_socket, "mode": 0o600}},
                    "filter_chains": [{"filters": [_hcm("egress", virtual_hosts, tracing)]}],
                },
                _stats_listener(admin),
            ],
            "clusters": [_cluster(spec, identity) for spec in clusters]
            + [_admin_cluster(admin)]
            + ([_collector(tracing)] if tracing is not None else []),
        },
    }


def replica_sidecar(
    *,
    node: str,
    listen_port: int | None,
    executor_socket: str | None,
    identity: WorkloadCert,
    allowed_peers: Sequence[str],
    admin: Admin,
    tracing: Tracing | None = None,
    listen_host: str = "127.0.0.1",
    executor_port: int | None = None,
    listen_socket: str | None = None,
) -> dict[str, Any]:
    """Bootstrap of one replica's ingress sidecar: mTLS on ``listen_socket`` (a unix socket,
    mode 0600: a local Flow) or on ``listen_host:listen_port`` (a container's port), to the
    executor on ``executor_socket`` (a unix socket) or on ``127.0.0.1:executor_port`` (a
    container sharing the sidecar's network namespace)."""
    if executor_socket:
        executor: dict[str, Any] = {"endpoint": {"address": {"pipe": {"path": executor_socket}}}}
    elif executor_port:
        executor = _endpoint("127.0.0.1", executor_port)
    else:
        raise ValueError("replica_sidecar needs executor_socket or executor_port")
    if listen_socket:
        listen: dict[str, Any] = {"pipe": {"path": listen_socket, "mode": 0o600}}
    elif listen_port is not None:
        listen = {"socket_address": {"address": listen_host, "port_value": listen_port}}
    else:
        raise ValueError("replica_sidecar needs listen_socket or listen_port")
    routes = _ingress_routes(node, tracing)
    return {
        "node": {"id": node, "cluster": "meshflow"},
        "admin": _admin(admin),
        **_tracer_runtime(tracing),
        "static_resources": {
            "listeners": [
                _ingress_listener(
                    listen,
                    routes,
                    identity,
                    allowed_peers,
                    tracing,
                ),
                _stats_listener(admin),
            ],
            "clusters": [_admin_cluster(admin), _executor_cluster("executor", executor)]
            + ([_collector(tracing)] if tracing is not None else []),
        },
    }


def _executor_cluster(name: str, endpoint: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _http2_options(),
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


@dataclass(frozen=True)
class HostReplica:
    """One replica as the Flow's single Envoy serves it (``envoy_proxy='host'``)."""

    label: str
    listen_socket: str
    """Its mTLS ingress listener: a unix socket (what the gateway's clusters list)."""
    executor_socket: str
    identity: WorkloadCert
    allowed_peers: tuple[str, ...]


def host_envoy(
    *,
    node: str,
    listen_socket: str,
    identity: WorkloadCert,
    clusters: Sequence[ClusterSpec],
    admin: Admin,
    lds_path: str,
    cds_path: str,
    tracing: Tracing | None = None,
) -> dict[str, Any]:
    """Bootstrap of a local Flow's one Envoy: the gateway's egress listener and clusters, as
    :func:`gateway_sidecar` writes them, and the replicas' listeners and executor clusters
    from the files ``lds_path`` and ``cds_path`` (:func:`host_listeners`,
    :func:`host_clusters`), which Envoy watches: rewriting them adds and removes replicas
    without a restart, as the endpoint files do."""
    config = gateway_sidecar(
        node=node,
        listen_socket=listen_socket,
        identity=identity,
        clusters=clusters,
        admin=admin,
        tracing=tracing,
    )
    config["dynamic_resources"] = {
        "lds_config": {"path_config_source": {"path": lds_path}, "resource_api_version": "V3"},
        "cds_config": {"path_config_source": {"path": cds_path}, "resource_api_version": "V3"},
    }
    return config


def host_listeners(
    replicas: Sequence[HostReplica], version: int, tracing: Tracing | None = None
) -> dict[str, Any]:
    """The LDS file of the Flow's one Envoy: every replica's ingress listener, as
    :func:`replica_sidecar` writes it, on its own unix socket with the replica's certificate,
    to its executor's cluster (``executor <label>``)."""
    listeners = [
        {
            "@type": _LISTENER,
            **_ingress_listener(
                {"pipe": {"path": replica.listen_socket, "mode": 0o600}},
                _ingress_routes(replica.label, tracing, f"executor {replica.label}"),
                replica.identity,
                replica.allowed_peers,
                tracing,
                name=f"ingress {replica.label}",
            ),
        }
        for replica in replicas
    ]
    return {"version_info": str(version), "resources": listeners}


def host_clusters(replicas: Sequence[HostReplica], version: int) -> dict[str, Any]:
    """The CDS file of the Flow's one Envoy: each replica's executor, on its unix socket."""
    clusters = [
        {
            "@type": _CLUSTER,
            **_executor_cluster(
                f"executor {replica.label}",
                {"endpoint": {"address": {"pipe": {"path": replica.executor_socket}}}},
            ),
        }
        for replica in replicas
    ]
    return {"version_info": str(version), "resources": clusters}


def _ingress_routes(
    node: str, tracing: Tracing | None, cluster: str = "executor"
) -> list[dict[str, Any]]:
    """Every call to the executor (``cluster``), its health checks left out of traces."""
    to_executor = {
        "cluster": cluster,
        "timeout": "0s",
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
    }
    routes: list[dict[str, Any]] = [
        {
            "match": {"prefix": "/"},
            "route": to_executor,
            "decorator": {"operation": f"ingress {node}"},
        }
    ]
    if tracing is not None:
        # The gateway's sidecar checks health every second: none of that is traced.
        no_sampling = {"numerator": 0, "denominator": "HUNDRED"}
        routes.insert(
            0,
            {
                "match": {"prefix": "/grpc.health.v1.Health/"},
                "route": to_executor,
                "tracing": {
                    "client_sampling": no_sampling,
                    "random_sampling": no_sampling,
                    "overall_sampling": no_sampling,
                },
            },
        )
    return routes


def _ingress_listener(
    address: dict[str, Any],
    routes: list[dict[str, Any]],
    identity: WorkloadCert,
    allowed_peers: Sequence[str],
    tracing: Tracing | None,
    name: str = "ingress",
) -> dict[str, Any]:
    """mTLS on ``address`` (an Envoy address), only ``allowed_peers`` admitted."""
    return {
        "name": name,
        "address": address,
        "filter_chains": [
            {
                "filters": [
                    _hcm(
                        name,
                        [{"name": "executor", "domains": ["*"], "routes": routes}],
                        tracing,
                    )
                ],
                "transport_socket": {
                    "name": "envoy.transport_sockets.tls",
                    "typed_config": {
                        "@type": _DOWNSTREAM_TLS,
                        "require_client_certificate": True,
                        "common_tls_context": _tls_context(identity, allowed_peers),
                    },
                },
            }
        ],
    }


def endpoints(cluster: str, sockets: Sequence[str], version: int) -> dict[str, Any]:
    """An EDS file: the replicas of one cluster (their mTLS listeners' unix sockets)."""
    return {
        "version_info": str(version),
        "resources": [
            {
                "@type": _ASSIGNMENT,
                "cluster_name": cluster,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"pipe": {"path": path}}}} for path in sockets
                        ]
                    }
                ],
            }
        ],
    }


def write_yaml(path: str, document: Mapping[str, Any]) -> None:
    """Write ``document`` so that a watcher sees the old file or the new one, never half."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(dict(document), fh, sort_keys=False)
    os.replace(tmp, path)
