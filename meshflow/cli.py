"""The meshflow command: serve a Flow, an executor or a gateway; ping a server.

Bad arguments get one line on stderr and exit status 2. The working directory is on the
import path, as with uvicorn or flask: ``uses: my_pkg.indexer:Indexer`` finds ``my_pkg/``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import cloudpickle
import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshflow.errors import ConfigError, FlowStartError, MeshflowError
from meshflow.executor.executor import RuntimeArgs, check_replicas, instantiate
from meshflow.executor.loader import check_executor_class, load_class, read_executor_yaml
from meshflow.flow.config import load_flow, read_flow_header
from meshflow.flow.flow import Flow
from meshflow.flow.status import format_status, read_state, with_health
from meshflow.gateway.auth import mint, parse_ttl, read_key_material
from meshflow.gateway.topology import Topology
from meshflow.grpc_lifecycle import write_ready_file
from meshflow.mesh.certs import FlowCA, write_private
from meshflow.observability.logs import configure_logging
from meshflow.observability.prometheus import prometheus_config, write_prometheus_config
from meshflow.observability.tracing import parse_sampling, setup_tracing, tracing_requested
from meshflow.spec.launch import ExecutorLaunch, GatewayLaunch, Observability
from meshflow.spec.names import state_file
from meshflow.voucher import Signer, Verifier

log = logging.getLogger("meshflow.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meshflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"meshflow {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    flow = sub.add_parser("flow", help="serve a Flow from its YAML file until Ctrl-C")
    flow.add_argument("config", help="path of the Flow YAML")
    flow.add_argument("--port", type=int, help="override the gateway port")
    flow.add_argument(
        "--quiet", action="store_true", help="do not print the processes' logs (still kept)"
    )

    ex = sub.add_parser("executor", help="serve one executor over gRPC")
    ExecutorLaunch.add_arguments(ex, sampling=_sampling)
    gw = sub.add_parser("gateway", help="serve a Flow's gateway (started by the Flow)")
    GatewayLaunch.add_arguments(gw, sampling=_sampling)

    status = sub.add_parser("status", help="show the processes of a running Flow and their health")
    status.add_argument("config", nargs="?", help="the Flow YAML it was started from")
    status.add_argument("--name", help="the Flow's name (instead of a YAML)")
    status.add_argument("--workspace", default="workspace", help="the Flow's workspace")
    status.add_argument("--json", action="store_true", help="print JSON")

    export = sub.add_parser("export", help="write configs for other tools from a Flow YAML")
    export.add_argument(
        "what", choices=["prometheus", "docker-compose", "kubernetes"], help="what to write"
    )
    export.add_argument("config", help="path of the Flow YAML")
    export.add_argument(
        "outdir", nargs="?", help="docker-compose: the folder to write docker-compose.yml into"
    )
    export.add_argument("--out", default="prometheus.yml", help="prometheus: file to write")
    export.add_argument("--scrape-interval", default="5s", help="e.g. 1s, 5s, 15s")
    export.add_argument("--namespace", help="kubernetes: namespace (default: the Flow's name)")
    export.add_argument(
        "--cert-manager", action="store_true", help="kubernetes: cert-manager Certificates"
    )
    export.add_argument("--hpa", action="store_true", help="kubernetes: autoscale on CPU")
    export.add_argument("--ingress-host", help="kubernetes: an Ingress for this host name")
    export.add_argument(
        "--context", help="the project folder copied into the image (default: this folder)"
    )
    export.add_argument(
        "--dockerfile", help="where to write the image's Dockerfile (default: OUTDIR/Dockerfile)"
    )
    export.add_argument("--image", help="the image's tag (default: meshflow-FLOW:VERSION)")
    export.add_argument(
        "--extras", default="", help="meshflow extras the image installs, e.g. index,models"
    )

    certs = sub.add_parser(
        "certs", help="create a Flow's CA and workload certificates (containers' one-shot job)"
    )
    certs.add_argument("--flow", required=True, help="the Flow's name (in the SPIFFE ids)")
    certs.add_argument("--out", required=True, help="folder of the CA and certificates")
    certs.add_argument("workload", nargs="+", help="workloads: 'gateway' and deployment names")
    certs.add_argument(
        "--ca-dir", help="folder of the CA's key and certificate (default: --out); keep it apart"
    )
    certs.add_argument(
        "--signing-key", help="write the gateway's Ed25519 signing key here (only the gateway's)"
    )
    certs.add_argument(
        "--signing-public-key", help="write its public key here (what executors verify with)"
    )

    _add_token_parser(sub)

    ping = sub.add_parser("ping", help="exit 0 when HOST:PORT serves gRPC health, 1 when not")
    ping.add_argument("target", help="HOST:PORT")
    ping.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    ping.add_argument(
        "--wait", type=float, default=0.0, help="keep trying up to this many seconds (a start)"
    )
    return parser


def _add_token_parser(sub: Any) -> None:
    token = sub.add_parser(
        "token",
        help="mint a JWT for development (production tokens come from your identity provider)",
    )
    key = token.add_mutually_exclusive_group()
    key.add_argument("--secret-file", help="file holding the HMAC secret (HS256)")
    key.add_argument("--secret-env", help="environment variable holding the HMAC secret")
    key.add_argument("--key-file", help="PEM private key (RS256/ES256)")
    token.add_argument("--flow", help="take issuer, audience and secret from this Flow YAML")
    token.add_argument("--sub", required=True, help="subject: who the token is for")
    token.add_argument(
        "--scope", action="append", default=[], help="a scope to grant (repeat for more)"
    )
    token.add_argument("--ttl", default="1h", help="lifetime: 30s, 15m, 1h, 7d (default 1h)")
    token.add_argument("--iss", help="issuer (default: the Flow's, else 'meshflow-dev')")
    token.add_argument("--aud", help="audience (default: the Flow's, else 'meshflow')")
    token.add_argument("--alg", help="HS256 (default with a secret), RS256, ES256...")
    token.add_argument("--kid", help="key id to put in the header (for JWKS rotation)")
    token.add_argument(
        "--claim", action="append", default=[], help="extra claim NAME=VALUE (e.g. tenant=acme)"
    )


def _sampling(text: str) -> str:
    try:
        parse_sampling(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _version() -> str:
    try:
        return version("meshflow")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    # The user's own packages, next to where the command runs (a console script's path starts
    # with its own folder instead); the Flow's processes inherit it.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())

    configure_logging()
    try:
        if args.command == "ping":
            return _ping(args.target, args.timeout, parser, wait=args.wait)
        if args.command == "flow":
            return _flow(args)
        if args.command == "status":
            return _status(args, parser)
        if args.command == "token":
            return _token(args)
        if args.command == "certs":
            return _certs(args)
        if args.command == "export":
            return _export(args)
        _die_with_parent()
        if args.command == "executor":
            return _executor(args, parser)
        return _gateway(args, parser)
    except ConfigError as exc:
        _report(args, exc, "ConfigError")
        print(f"meshflow: error: {exc}", file=sys.stderr)
        return 2
    except MeshflowError as exc:
        _report(args, exc, type(exc).__name__)
        print(f"meshflow: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        _report(args, exc, "OSError")
        print(f"meshflow: error: {exc}", file=sys.stderr)
        return 1


def _report(args: argparse.Namespace, exc: BaseException, kind: str) -> None:
    ready_file = getattr(args, "ready_file", None)
    if ready_file:
        write_ready_file(ready_file, {"error": str(exc), "kind": kind})


def _die_with_parent() -> None:
    """When started by a Flow, stop (drain, then exit) once the Flow's process is gone.

    A daemon thread polls the parent pid: unlike PR_SET_PDEATHSIG this does not fire when the
    thread that started the Flow ends while the Flow's process lives on.
    """
    parent = os.environ.get("MESHFLOW_PARENT_PID")
    if not parent or not parent.isdigit():
        return
    if os.getppid() != int(parent):
        sys.exit(1)

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        log.warning("the Flow's process %s is gone; stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


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
    uses_with = dict(launch.uses_with)
    if launch.uses_pickle:
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
            metrics=None
            if launch.metrics_port is None
            else (launch.metrics_host, launch.metrics_port),
            tracing=tracing,
            gateway_key=gateway_key,
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


def _export(args: argparse.Namespace) -> int:
    image = {
        "context": args.context,
        "dockerfile": args.dockerfile,
        "image": args.image,
        "extras": tuple(e.strip() for e in args.extras.split(",") if e.strip()),
    }
    if args.what == "docker-compose":
        # lazy: the exporters and the Envoy config they use cost ~25 ms; only export needs them
        from meshflow.deploy import export_compose

        if not args.outdir:
            raise ConfigError("export docker-compose needs OUTDIR: the folder to write into")
        os.makedirs(args.outdir, exist_ok=True)
        compose = os.path.join(args.outdir, "docker-compose.yml")
        written = export_compose(load_flow(args.config), compose, **image)
        print(f"wrote {len(written)} files; start with: docker compose -f {compose} up -d --build")
        return 0
    if args.what == "kubernetes":
        # lazy: the exporters and the Envoy config they use cost ~25 ms; only export needs them
        from meshflow.deploy import export_kubernetes, image_name

        if not args.outdir:
            raise ConfigError("export kubernetes needs OUTDIR: the folder to write into")
        flow = load_flow(args.config)
        written = export_kubernetes(
            flow,
            args.outdir,
            namespace=args.namespace,
            cert_manager=args.cert_manager,
            hpa=args.hpa,
            ingress_host=args.ingress_host,
            **image,
        )
        dockerfile = args.dockerfile or os.path.join(args.outdir, "Dockerfile")
        tag = args.image or image_name(flow.name)
        print(
            f"wrote {len(written)} files; build and push the image with: docker build -f "
            f"{dockerfile} -t {tag} {args.context or '.'} && docker push {tag}; then: "
            f"kubectl apply -f {written[-1]} && kubectl apply -k {args.outdir}"
        )
        return 0
    if args.outdir:
        raise ConfigError("export prometheus takes no OUTDIR (use --out FILE)")
    if not re.fullmatch(r"[0-9]+(ms|s|m|h)", args.scrape_interval):
        raise ConfigError(f"--scrape-interval {args.scrape_interval!r}: expected e.g. 5s or 1m")
    header = read_flow_header(args.config)  # no executor code needed
    config = prometheus_config(header.name, header.workspace, args.scrape_interval)
    try:
        write_prometheus_config(args.out, config)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.out!r}: {exc.strerror}") from None
    print(f"wrote {args.out}: scrapes Flow {header.name!r} (targets from its workspace)")
    return 0


def _certs(args: argparse.Namespace) -> int:
    try:
        ca = FlowCA(args.out, args.flow, ca_dir=args.ca_dir)
        for workload in args.workload:
            print(f"{workload}: {ca.identity(workload).spiffe_id}")
        if args.signing_key:
            try:
                with open(args.signing_key, "rb") as fh:
                    signer = Signer.from_pem(fh.read())  # kept across runs of the job
            except FileNotFoundError:
                signer = Signer.generate()
                write_private(args.signing_key, signer.private_pem, 0o600)
            if args.signing_public_key:
                write_private(args.signing_public_key, signer.public_pem, 0o644)
            print(f"gateway signing key: {args.signing_key}")
        elif args.signing_public_key:
            raise ConfigError("--signing-public-key needs --signing-key")
    except OSError as exc:
        raise ConfigError(f"cannot write certificates in {args.out!r}: {exc.strerror}") from None
    return 0


def _read_key(path: str, flag: str) -> bytes:
    """A key from a file, or from standard input for ``-`` (nothing left on disk)."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"{flag} {path!r}: {exc.strerror}") from None


def _not_dumpable() -> None:
    """Keep other processes of the same user out of this one's memory (/proc/PID/mem,
    ptrace, core dumps), where the signing key lives (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        log.warning("could not make the gateway non-dumpable (errno %d)", ctypes.get_errno())


def _token(args: argparse.Namespace) -> int:
    issuer, audience = args.iss, args.aud
    secret_file, secret_env = args.secret_file, args.secret_env
    if args.flow:
        auth = read_flow_header(args.flow).auth
        if auth is None:
            raise ConfigError(f"{args.flow} has no auth: section under with:")
        issuer = issuer or auth.issuer
        audience = audience or auth.audience
        if not (secret_file or secret_env or args.key_file):
            secret_file, secret_env = auth.secret_file, auth.secret_env
    key: Any
    if args.key_file:
        try:
            pem = read_key_material("key_file", args.key_file, "private key")
            key = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{args.key_file} is not an unencrypted PEM private key: {exc}"
            ) from None
        alg = args.alg or ("ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256")
    elif secret_file or secret_env:
        source = "secret_file" if secret_file else "secret_env"
        key = read_key_material(source, secret_file or secret_env, "JWT secret").strip()
        alg = args.alg or "HS256"
    else:
        raise ConfigError("give --secret-file, --secret-env or --key-file (or --flow)")
    claims = {}
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--claim {item!r}: expected NAME=VALUE")
        claims[name] = value
    scopes = tuple(s for item in args.scope for s in item.split())
    print(
        mint(
            key=key,
            subject=args.sub,
            issuer=issuer or "meshflow-dev",
            audience=audience or "meshflow",
            scopes=scopes,
            ttl=parse_ttl(args.ttl),
            algorithm=alg,
            kid=args.kid,
            claims=claims,
        )
    )
    return 0


def _gateway(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # lazy: the gateway's servers (gRPC doors, Strawberry/uvicorn behind them) load only to serve
    from meshflow.gateway.process import serve_gateway

    try:
        launch = GatewayLaunch.from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
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
            max_request_bytes=launch.max_request_bytes,
            drain_timeout=launch.drain_timeout,
            graphql=None if launch.graphql_port is None else (launch.host, launch.graphql_port),
            limits=launch.graphql_limits,
            auth=launch.auth,
            signer=signer,
            static=launch.static,
            cors=launch.cors,
            metrics=metrics,
            tracing=tracing,
        )
    )
    return 0
