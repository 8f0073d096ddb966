"""Run a grpc.aio server with health checking until SIGTERM/SIGINT, then drain it.

Shared by the executor runtime and the gateway: both announce readiness through a small JSON
file (the port they bound, their pid) that the Flow waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshflow.wire import server_options

log = logging.getLogger("meshflow.grpc_lifecycle")


def write_ready_file(path: str, payload: dict[str, Any]) -> None:
    """Atomically write the JSON a parent process waits for."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


async def serve_forever(
    register: Callable[[grpc.aio.Server], Awaitable[None] | None],
    *,
    address: str,
    ready_file: str | None,
    drain_timeout: float,
    what: str,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    max_receive: int | None = None,
    services: tuple[str, ...] = (),
    also_start: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> None:
    """Start a grpc.aio server with health checking, serve until SIGTERM/SIGINT, then drain.

    On a stop signal the health status turns NOT_SERVING, new calls are refused and calls in
    flight get ``drain_timeout`` seconds to finish.
    """
    options = server_options() if max_receive is None else server_options(max_receive)
    server = grpc.aio.server(options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if address.startswith("unix:"):
        # A socket file left by a previous run of this process (after a crash) blocks bind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address[len("unix:") :])
    maybe = register(server)
    if maybe is not None:
        await maybe
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"{what} cannot listen on {address}: address in use or not allowed") from exc
    if port == 0:
        raise OSError(f"{what} cannot listen on {address}: address in use or not allowed")
    await server.start()
    if address.startswith("unix:"):
        # Only this user may connect; in the mesh only the executor's own sidecar does.
        os.chmod(address[len("unix:") :], 0o600)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    for service in services:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = address
    if not address.startswith("unix:") and address.endswith(":0"):
        bound = f"{address[: -len(':0')]}:{port}"  # the port the OS chose, not the one asked
    log.info("%s serving on %s (pid %d)", what, bound, os.getpid())
    payload: dict[str, Any] = {"port": port, "pid": os.getpid()}
    if also_start is not None:
        # Other doors in the same loop (the gateway's HTTP server); their info joins the file.
        payload.update(await also_start())
    if ready_file:
        write_ready_file(ready_file, payload)
    await stop.wait()
    log.info("%s draining (up to %.1f s)", what, drain_timeout)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(drain_timeout)
    if on_stop is not None:
        await on_stop()
    log.info("%s stopped", what)
