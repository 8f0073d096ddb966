"""Deploying a Flow beyond one process tree: docker-compose for one host, Kubernetes for many.

``meshflow export docker-compose FLOW.yml OUTDIR`` and ``Flow.to_docker_compose_yaml(path)``
write the same topology as a local Flow (one container per executor replica, each with its
Envoy sidecar in its network namespace, the gateway with its own sidecar, the Flow's CA and
SPIFFE identities) plus Jaeger, Prometheus and Grafana.
"""

from meshflow.deploy.compose import export_compose
from meshflow.deploy.images import ENVOY_IMAGE, BuildContext, image_name
from meshflow.deploy.kubernetes import export_kubernetes

__all__ = [
    "ENVOY_IMAGE",
    "BuildContext",
    "export_compose",
    "export_kubernetes",
    "image_name",
]
