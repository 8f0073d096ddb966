"""The meshflow command: serve a Flow, an executor or a gateway; ping a server.

Bad arguments get one line on stderr and exit status 2. The working directory is on the
import path, as with uvicorn or flask: ``uses: my_pkg.indexer:Indexer`` finds ``my_pkg/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from meshflow.cli.graphql import add_graphql_parser
from meshflow.cli.hub import add_hub_parser
from meshflow.errors import ConfigError, MeshflowError
from meshflow.grpc_lifecycle import write_ready_file
from meshflow.observability.logs import configure_logging
from meshflow.observability.tracing import parse_sampling
from meshflow.spec.launch import ExecutorLaunch, GatewayLaunch

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
    add_graphql_parser(sub)
    add_hub_parser(sub)

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
    # lazy: importlib.metadata (with zipfile and csv) is 1.5 MB in every executor otherwise
    from importlib.metadata import PackageNotFoundError, version

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
    # Each command imports what it runs: an executor's process loads no Flow, gateway, JWT
    # or certificate code (tens of MB of memory per process).
    try:
        if args.command == "ping":
            from meshflow.cli.run import _ping

            return _ping(args.target, args.timeout, parser, wait=args.wait)
        if args.command == "flow":
            from meshflow.cli.run import _flow

            return _flow(args)
        if args.command == "status":
            from meshflow.cli.run import _status

            return _status(args, parser)
        if args.command in ("token", "certs", "export"):
            from meshflow.cli import tools

            command = {"token": tools._token, "certs": tools._certs, "export": tools._export}
            return command[args.command](args)
        if args.command == "graphql":
            from meshflow.cli.graphql import _graphql

            return _graphql(args)
        if args.command == "hub":
            from meshflow.cli.hub import _hub_command

            return _hub_command(args)
        _die_with_parent()
        if args.command == "executor":
            from meshflow.cli.run import _executor

            return _executor(args, parser)
        from meshflow.cli.run import _gateway

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
