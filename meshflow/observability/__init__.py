"""Tracing (OpenTelemetry), metrics (Prometheus) and logs shared by the gateway and executors."""
