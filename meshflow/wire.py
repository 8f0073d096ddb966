"""Names and options of meshflow's gRPC wire, shared by servers and clients."""

from __future__ import annotations

from typing import Any

import grpc

from meshflow.errors import MeshflowError

EXECUTOR_PROCESS = "/meshflow.v1.ExecutorService/Process"
EXECUTOR_ENDPOINTS = "/meshflow.v1.ExecutorService/Endpoints"
GATEWAY_POST = "/meshflow.v1.GatewayService/Post"
GATEWAY_STREAM = "/meshflow.v1.GatewayService/Stream"
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
    """Options for channels from clients and the gateway."""
    return [
        ("grpc.max_receive_message_length", INTERNAL_MAX_MESSAGE),
        ("grpc.max_send_message_length", INTERNAL_MAX_MESSAGE),
        ("grpc.enable_retries", 0),
    ]
