"""Names and options of meshflow's gRPC wire, shared by servers and clients."""

from __future__ import annotations

import json
from typing import Any

import grpc

from meshflow.errors import MeshflowError

EXECUTOR_PROCESS = "/meshflow.v1.ExecutorService/Process"
EXECUTOR_ENDPOINTS = "/meshflow.v1.ExecutorService/Endpoints"
GATEWAY_POST = "/meshflow.v1.GatewayService/Post"
GATEWAY_STREAM = "/meshflow.v1.GatewayService/Stream"
TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"
"""HTTP: the milliseconds a caller still gives its request (what an Envoy in front sets, and
what :class:`~meshflow.Client` sends): the gateway refuses at once what cannot start in them."""
RETRY_PUSHBACK = "grpc-retry-pushback-ms"
"""gRPC: the trailer of an overload refusal that tells clients (and Envoy) when to retry."""
MISSING_SCOPE = "meshflow-missing-scope"
"""Trailing metadata of a ``PERMISSION_DENIED`` answer: the scope the token lacks."""


def grpc_status(exc: MeshflowError | type[MeshflowError]) -> grpc.StatusCode:
    """The status a gRPC server ends a call with for ``exc`` (an error or its class): the
    class's ``grpc_code``."""
    return grpc.StatusCode[exc.grpc_code]


INTERNAL_MAX_MESSAGE = 512 * 1024 * 1024
"""Message size limit between gateway and executors; clients are limited by the gateway."""


def server_options(max_receive: int = INTERNAL_MAX_MESSAGE) -> list[tuple[str, Any]]:
    """Options for every meshflow gRPC server.

    ``so_reuseport`` is off so that binding a port another process holds fails instead of
    silently sharing it.
    """
    return [
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_receive),
        ("grpc.max_send_message_length", INTERNAL_MAX_MESSAGE),
    ]


def channel_options() -> list[tuple[str, Any]]:
    """Options for the gateway's channels to executors (Envoy retries, not gRPC)."""
    return [
        ("grpc.max_receive_message_length", INTERNAL_MAX_MESSAGE),
        ("grpc.max_send_message_length", INTERNAL_MAX_MESSAGE),
        ("grpc.enable_retries", 0),
    ]


RETRY_BUFFER = 4 * 1024 * 1024
"""The largest request a client's channel keeps to send again (gRPC retries none larger)."""


def client_channel_options(retries: int) -> list[tuple[str, Any]]:
    """Options for a client's channel to a gateway: a ``Post`` refused for overload
    (``RESOURCE_EXHAUSTED``) is sent again up to ``retries`` times (4 at most, gRPC's bound),
    after the gateway's ``grpc-retry-pushback-ms`` or else an exponential back-off with
    jitter, always within the call's deadline; gRPC's retry throttling stops retries while
    most calls fail, so that clients do not pile retries onto an overloaded gateway."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", INTERNAL_MAX_MESSAGE),
        ("grpc.max_send_message_length", INTERNAL_MAX_MESSAGE),
    ]
    if retries < 1:
        return [*options, ("grpc.enable_retries", 0)]
    service, method = GATEWAY_POST.lstrip("/").split("/")
    config = {
        "methodConfig": [
            {
                "name": [{"service": service, "method": method}],
                "retryPolicy": {
                    "maxAttempts": min(retries, 4) + 1,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["RESOURCE_EXHAUSTED"],
                },
            }
        ],
        "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
    }
    return [
        *options,
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(config)),
        ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER),
    ]
