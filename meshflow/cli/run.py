"""The commands that serve: ``meshflow flow``, ``executor``, ``gateway``, ``status``, ``ping``."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshflow.errors import ConfigError, FlowStartError
from meshflow.executor.executor import RuntimeArgs, check_replicas, instantiate
from meshflow.executor.loader import check_executor_class, load_class, read_executor_yaml
from meshflow.observability.tracing import setup_tracing, tracing_requested
from meshflow.spec.launch import ExecutorLaunch, GatewayLaunch, Observability
from meshflow.voucher import Signer, Verifier

log = logging.getLogger("meshflow.cli")


def _ping(
    target: str, timeout: float, parser: argparse.ArgumentParser, *, wait: float = 0.0
) -> int:
    """0 when ``target`` serves gRPC health; with ``wait``, ask again until it does or
    ``wait`` seconds have passed (what a script needs after starting a Flow)."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        parser.error(f"ping takes HOST:PORT, got {target!r}")

    deadline = time.monotonic() + wait
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
                serving = answer.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError as exc:
                status, serving = f"not serving ({exc.code().name})", False
            if serving or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    print(f"{target}: {status}")
    return 0 if serving else 1


def _flow(args: argparse.Namespace) -> int:
    from meshflow.flow.flow import Flow

    flow = Flow.load_config(args.config, port=args.port)
    if flow.log_dir is None:  # kept after exit, unlike a library Flow's temporary folder
        flow.log_dir = os.path.join(flow.workspace, ".meshflow", "logs", flow.name)
    stop = threading.Event()
    try:
        flow.start()
    except KeyboardInterrupt:  # Ctrl-C while starting: the Flow stopped what it started
        return 130
    try:
        _serve(flow, args, stop)
    except KeyboardInterrupt:  # Ctrl-C before block() took over the signal: same as after
        pass
    finally:
        stop.set()
        flow.close()
    return 0


def _serve(flow: Any, args: argparse.Namespace, stop: threading.Event) -> None:
    """Tell where the running Flow is, follow its logs, serve until Ctrl-C or SIGTERM."""
    print(f"Flow {flow.name!r} serving gRPC on {flow.host}:{flow.port}", flush=True)
    if flow.graphql:
        page = flow.graphql_url.removesuffix("graphql")
        print(f"GraphQL on {flow.graphql_url} (a page to try queries: {page})", flush=True)
    print(f"logs in {flow.log_dir}", flush=True)
    if not args.quiet:
        _follow_logs(flow.log_dir, stop)
    if flow.auth is not None:
        print(
            f"JWT auth on (issuer {flow.auth.issuer}, audience {flow.auth.audience}); "
            f"a dev token: meshflow token --flow {args.config} --sub NAME --scope SCOPE",
            flush=True,
        )
    flow.block()


def _follow_logs(folder: str, stop: threading.Event) -> None:
    """Print what the Flow's processes log from now on, each line after the process's name
    (as ``docker compose up`` does); Envoy's own logs stay in their files."""

    def follow() -> None:
        offsets: dict[str, int] = {}
        for name in os.listdir(folder):
            offsets[name] = os.path.getsize(os.path.join(folder, name))
        while not stop.wait(0.3):
            for name in sorted(os.listdir(folder)):
                if not name.endswith(".log") or name.endswith(".envoy.log"):
                    continue
                path = os.path.join(folder, name)
                try:
                    if os.path.getsize(path) <= offsets.get(name, 0):
                        continue  # nothing new: no open and read every 0.3 s
                    with open(path, "rb") as fh:
                        fh.seek(offsets.get(name, 0))
                        data = fh.read()
                except OSError:
                    continue
                end = data.rfind(b"\n") + 1
                offsets[name] = offsets.get(name, 0) + end
                label = name.removesuffix(".log")
                for line in data[:end].decode("utf-8", "replace").splitlines():
                    print(f"{label} | {line}", flush=True)

    threading.Thread(target=follow, name="follow-logs", daemon=True).start()


def _status(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from meshflow.flow.config import read_flow_header
    from meshflow.flow.status import format_status, read_state, with_health
    from meshflow.spec.names import state_file

    if args.config:
        header = read_flow_header(args.config)
        name, workspace = header.name, header.workspace
    elif args.name:
        name, workspace = args.name, args.workspace
    else:
        parser.error("status needs the Flow's YAML or --name")
    try:
        state = read_state(state_file(workspace, name))
    except ConfigError as exc:
        hint = "" if args.config else " (from another folder, give --workspace or the Flow's YAML)"
        raise ConfigError(f"{exc}{hint}") from None
    data = with_health(state)
    print(json.dumps(data, indent=1) if args.json else format_status(data))
    return 0


def _executor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # lazy: the executor runtime (services stubs, thread pool) loads only to serve an executor
    from meshflow.executor.runtime import serve_executor

    try:
        launch = ExecutorLaunch.from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    tune_allocator()
    uses_with = dict(launch.uses_with)
    if launch.uses_pickle:
        import cloudpickle

        with open(launch.uses_pickle, "rb") as fh:
            cls = check_executor_class(cloudpickle.load(fh), launch.uses_pickle)
    else:
        assert launch.uses is not None
        ref = launch.uses
        if ref.endswith((".yml", ".yaml")):
            ref, from_yaml = read_executor_yaml(ref)
            uses_with = {**from_yaml, **uses_with}
        cls = load_class(ref)
    name = launch.name or cls.__name__
    replica = launch.replica_id or 0
    check_replicas(cls, launch.replicas, deployment=name)
    address = launch.address or f"{launch.host}:{launch.port}"
    tracing = _start_tracing(
        launch,
        f"{name}",
        {
            "meshflow.deployment": name,
            "meshflow.shard": launch.shard_id,
            "meshflow.replica": replica,
            "service.instance.id": f"{name}-s{launch.shard_id}-r{replica}",
        },
        door=False,
    )
    runtime_args = RuntimeArgs(
        name=name,
        replica_id=replica,
        shard_id=launch.shard_id,
        replicas=launch.replicas,
        shards=launch.shards,
        workspace_root=launch.workspace,
    )
    gateway_key = None
    if launch.gateway_key:
        gateway_key = launch.gateway_key.encode()
    elif launch.gateway_key_file:
        gateway_key = _read_key(launch.gateway_key_file, "--gateway-key-file")
    if gateway_key is not None:
        Verifier(gateway_key)  # a bad key fails before the executor is built
    try:
        executor = instantiate(cls, uses_with, runtime_args)
    except TypeError as exc:
        raise ConfigError(f"executor {name!r} ({cls.__name__}) cannot be built: {exc}") from None
    except Exception as exc:
        log.exception("executor %r (%s) failed in __init__", name, cls.__name__)
        raise FlowStartError(
            f"executor {name!r} ({cls.__name__}) failed in __init__: {type(exc).__name__}: {exc}",
            process=f"executor {name!r}",
        ) from None
    asyncio.run(
        serve_executor(
            executor,
            name=name,
            address=address,
            ready_file=launch.ready_file,
            drain_timeout=launch.drain_timeout,
            sync_workers=launch.sync_workers,
            sync_calls=launch.sync_calls,
            metrics=None
            if launch.metrics_port is None
            else (launch.metrics_host, launch.metrics_port),
            tracing=tracing,
            gateway_key=gateway_key,
            batching=launch.dynamic_batching,
        )
    )
    return 0


def _start_tracing(
    args: Observability, service: str, attributes: dict[str, Any], *, door: bool
) -> bool:
    if not tracing_requested(args.tracing):
        return False
    setup_tracing(
        service,
        attributes,
        sampling=args.trace_sampling,
        instrument_servers=door,
        follow_only=not door,  # executors continue the gateway's traces, never start one
    )
    return True


def _gateway(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # lazy: the gateway's servers (gRPC doors, Strawberry/uvicorn behind them) load only to serve
    from meshflow.gateway.process import serve_gateway
    from meshflow.gateway.topology import Topology

    try:
        launch = GatewayLaunch.from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    tune_allocator()
    signer = None
    if launch.signing_key_file:
        _not_dumpable()
        signer = Signer.from_pem(_read_key(launch.signing_key_file, "--signing-key-file"))
    elif launch.auth is not None:
        raise ConfigError("the gateway needs --signing-key-file with --auth")
    if launch.topology.lstrip().startswith("{"):  # inline, as a container command gives it
        topology = Topology.from_dict(json.loads(launch.topology))
    else:
        with open(launch.topology, encoding="utf-8") as fh:
            topology = Topology.from_dict(json.load(fh))
    tracing = _start_tracing(
        launch, "meshflow-gateway", {"meshflow.component": "gateway"}, door=True
    )
    metrics = None if launch.metrics_port is None else (launch.metrics_host, launch.metrics_port)
    asyncio.run(
        serve_gateway(
            topology,
            address=f"{launch.host}:{launch.port}",
            mesh=launch.mesh,
            egress=launch.egress,
            ready_file=launch.ready_file,
            max_in_flight=launch.max_in_flight,
            admission=launch.admission,
            max_request_bytes=launch.max_request_bytes,
            drain_timeout=launch.drain_timeout,
            graphql=None if launch.graphql_port is None else (launch.host, launch.graphql_port),
            limits=launch.graphql_limits,
            persisted=launch.persisted_queries,
            federation=launch.federation,
            auth=launch.auth,
            signer=signer,
            static=launch.static,
            cors=launch.cors,
            metrics=metrics,
            tracing=tracing,
        )
    )
    return 0


MMAP_THRESHOLD = 4 << 20
"""Bytes from which glibc's malloc maps a block of its own (default: 128 KiB, adapting)."""
TRIM_THRESHOLD = 16 << 20
"""Free bytes at the top of the heap before glibc gives them back (default: 128 KiB)."""
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (malloc.h)


def tune_allocator() -> bool:
    """Keep a request's large buffers (its arrays, its serialized answer: 134 KB for 64
    documents of 512 floats) on the heap, reused from one request to the next, instead of
    mapped and unmapped for each: with glibc's defaults every such buffer costs a page fault
    per 4 KiB each time. In-process, a 64-document endpoint that works on the columns costs
    about a third of the CPU with these thresholds (benchmarks/RESULTS.md). An idle process
    may keep up to ``TRIM_THRESHOLD`` of freed heap.

    Left alone when glibc's own variables (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``) are set, and off glibc. Returns whether it tuned."""
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # not glibc (musl has no mallopt)
        return False
    mapped: int = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trimmed: int = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return mapped == 1 and trimmed == 1


def _not_dumpable() -> None:
    """Keep other processes of the same user out of this one's memory (/proc/PID/mem,
    ptrace, core dumps), where the signing key lives (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        log.warning("could not make the gateway non-dumpable (errno %d)", ctypes.get_errno())


def _read_key(path: str, flag: str) -> bytes:
    """A key from a file, or from standard input for ``-`` (nothing left on disk)."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"{flag} {path!r}: {exc.strerror}") from None
