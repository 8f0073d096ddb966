"""The command lines of a Flow's processes, typed: ``meshflow executor`` and ``meshflow gateway``.

One class per process kind holds every option; :meth:`to_argv` writes its arguments and
:meth:`from_args` reads what the CLI parser (built by :meth:`add_arguments`) made of them,
so that the local runtime, the docker-compose and Kubernetes exports and the CLI agree on one
spelling::

    launch = ExecutorLaunch(uses='my_pkg:Encoder', name='enc', address='unix:/run/enc.sock')
    command = ['meshflow', *launch.to_argv()]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshflow.errors import ConfigError
from meshflow.spec.admission import AdmissionPolicy
from meshflow.spec.auth import JWTAuth
from meshflow.spec.batching import DynamicBatching, batching_by_endpoint
from meshflow.spec.federation import Federation
from meshflow.spec.flow import DeploymentSpec, FlowSpec, Options, typed_options
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import PersistedQueries
from meshflow.types import DEFAULT_MAX_REQUEST_BYTES, SYNC_CALLS, SyncCalls

LOCALHOST = "127.0.0.1"


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"{flag} is not valid JSON: {text!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object")
    return value


@dataclass(frozen=True, kw_only=True)
class Observability:
    """What every meshflow process takes about metrics and traces."""

    metrics_port: int | None = None
    metrics_host: str = LOCALHOST
    tracing: bool = False
    trace_sampling: str | None = None

    def _observability_argv(self) -> list[str]:
        argv = []
        if self.metrics_port is not None or self.metrics_host != LOCALHOST:
            argv += ["--metrics-host", self.metrics_host]
        if self.metrics_port is not None:
            argv += ["--metrics-port", str(self.metrics_port)]
        if self.tracing:
            argv.append("--tracing")
        if self.trace_sampling is not None:
            argv += ["--trace-sampling", self.trace_sampling]
        return argv

    @staticmethod
    def add_observability_arguments(
        parser: argparse.ArgumentParser, sampling: Callable[[str], str] = str
    ) -> None:
        parser.add_argument(
            "--metrics-port", type=int, help="serve Prometheus /metrics on this port (0: any free)"
        )
        parser.add_argument("--metrics-host", default=LOCALHOST, help="interface of /metrics")
        parser.add_argument(
            "--tracing", action="store_true", help="export OpenTelemetry spans over OTLP/gRPC"
        )
        parser.add_argument(
            "--trace-sampling",
            type=sampling,
            help="new traces to sample: a share of requests in (0, 1], or a rate such as 10/s "
            "(default: OTEL_TRACES_SAMPLER's choice)",
        )

    @staticmethod
    def options_of(
        spec: FlowSpec, *, metrics_host: str, metrics_port: int, trace_sampling: str | None = None
    ) -> dict[str, Any]:
        """The observability options of a process of the Flow ``spec``: metrics served on
        ``metrics_host:metrics_port`` when the Flow has metrics; ``trace_sampling`` (the
        gateway's: it samples, every other process follows its decision) when it traces."""
        options: dict[str, Any] = {}
        if spec.metrics:
            options.update(metrics_host=metrics_host, metrics_port=metrics_port)
        if spec.tracing:
            options.update(tracing=True, trace_sampling=trace_sampling)
        return options

    @staticmethod
    def _observability_of(args: argparse.Namespace) -> dict[str, Any]:
        return {
            "metrics_port": args.metrics_port,
            "metrics_host": args.metrics_host,
            "tracing": args.tracing,
            "trace_sampling": args.trace_sampling,
        }


@dataclass(frozen=True, kw_only=True)
class ExecutorLaunch(Observability):
    """``meshflow executor``: one replica of one shard of a deployment.

    Exactly one of ``uses`` (an import reference or ``executor.yml``) and ``uses_pickle`` (a
    file holding the class, pickled); exactly one of ``address`` (``host:port`` or
    ``unix:/path``) and ``port`` (on ``host``). ``replica_id`` None: any replica (a pod that
    does not know its index), served as replica 0.
    """

    uses: str | None = None
    uses_pickle: str | None = None
    name: str | None = None
    uses_with: Mapping[str, Any] = field(default_factory=dict)
    address: str | None = None
    port: int | None = None
    host: str = LOCALHOST
    replica_id: int | None = None
    shard_id: int = 0
    replicas: int = 1
    shards: int = 1
    workspace: str = "workspace"
    sync_workers: int = 1
    sync_calls: SyncCalls = "auto"
    drain_timeout: float = 10.0
    ready_file: str | None = None
    gateway_key: str | None = None
    gateway_key_file: str | None = None
    dynamic_batching: Mapping[str, DynamicBatching] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.uses is None) == (self.uses_pickle is None):
            raise ConfigError("an executor launch needs exactly one of uses and uses_pickle")
        if (self.address is None) == (self.port is None):
            raise ConfigError("an executor launch needs exactly one of address and port")
        if self.gateway_key is not None and self.gateway_key_file is not None:
            raise ConfigError("an executor launch takes at most one of gateway_key(_file)")
        if self.sync_workers < 1:
            raise ConfigError(f"--sync-workers must be 1 or more, got {self.sync_workers}")

    def to_argv(self) -> list[str]:
        """The arguments of ``meshflow`` that start this executor."""
        argv = ["executor"]
        argv += ["--uses", self.uses] if self.uses is not None else []
        argv += ["--uses-pickle", self.uses_pickle] if self.uses_pickle is not None else []
        argv += ["--name", self.name] if self.name is not None else []
        argv += ["--address", self.address] if self.address is not None else []
        argv += ["--port", str(self.port)] if self.port is not None else []
        argv += ["--host", self.host] if self.host != LOCALHOST else []
        argv += ["--uses-with", _json(dict(self.uses_with))]
        argv += ["--replica-id", str(self.replica_id)] if self.replica_id is not None else []
        argv += ["--shard-id", str(self.shard_id), "--replicas", str(self.replicas)]
        argv += ["--shards", str(self.shards), "--workspace", self.workspace]
        argv += ["--sync-workers", str(self.sync_workers)] if self.sync_workers != 1 else []
        argv += ["--sync-calls", self.sync_calls] if self.sync_calls != "auto" else []
        argv += ["--drain-timeout", str(self.drain_timeout)] if self.drain_timeout != 10.0 else []
        argv += ["--ready-file", self.ready_file] if self.ready_file is not None else []
        argv += self._observability_argv()
        argv += ["--gateway-key", self.gateway_key] if self.gateway_key is not None else []
        if self.gateway_key_file is not None:
            argv += ["--gateway-key-file", self.gateway_key_file]
        if self.dynamic_batching:
            batching = {k: v.to_dict() for k, v in self.dynamic_batching.items()}
            argv += ["--dynamic-batching", _json(batching)]
        return argv

    @classmethod
    def of(
        cls, dep: DeploymentSpec, shard: int, replica: int | None, **place: Any
    ) -> ExecutorLaunch:
        """The launch of one replica of ``dep`` (``replica`` None: any); ``place``: where and
        how this replica runs (``uses``, ``address``, ``workspace``...)."""
        return cls(
            name=dep.name,
            uses_with=dict(dep.uses_with),
            replica_id=replica,
            shard_id=shard,
            replicas=dep.replicas,
            shards=dep.shards,
            dynamic_batching=dict(dep.uses_dynamic_batching),
            sync_workers=dep.sync_workers,
            sync_calls=dep.sync_calls,
            **place,
        )

    @staticmethod
    def add_arguments(
        parser: argparse.ArgumentParser, sampling: Callable[[str], str] = str
    ) -> None:
        """The flags of ``meshflow executor``."""
        uses = parser.add_mutually_exclusive_group(required=True)
        uses.add_argument("--uses", help="'pkg.module:Class', 'file.py:Class' or 'executor.yml'")
        uses.add_argument("--uses-pickle", help=argparse.SUPPRESS)
        parser.add_argument("--name", help="deployment name (default: the class name)")
        parser.add_argument(
            "--uses-with", default="{}", help="constructor arguments as a JSON object"
        )
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--port", type=int, help="TCP port on --host")
        where.add_argument("--address", help="'host:port' or 'unix:/path/to.sock'")
        parser.add_argument("--host", default=LOCALHOST)
        parser.add_argument("--replica-id", type=int, help="default 0")
        parser.add_argument("--shard-id", type=int, default=0)
        parser.add_argument("--replicas", type=int, default=1)
        parser.add_argument("--shards", type=int, default=1)
        parser.add_argument("--workspace", default="workspace")
        parser.add_argument(
            "--sync-workers", type=int, default=1, help="threads for sync endpoint methods"
        )
        parser.add_argument(
            "--sync-calls",
            choices=SYNC_CALLS,
            default="auto",
            help="where sync endpoint methods run: 'auto' (a first call in the threads, then "
            "on the event loop until calls compute or block for over 2 ms, then in the threads "
            "for good) or 'thread' (always in the threads)",
        )
        parser.add_argument("--drain-timeout", type=float, default=10.0)
        parser.add_argument("--ready-file", help=argparse.SUPPRESS)
        gateway_key = parser.add_mutually_exclusive_group()
        gateway_key.add_argument(
            "--gateway-key",
            help="the gateway's public key (PEM): accept only identities it vouched for",
        )
        gateway_key.add_argument("--gateway-key-file", help="file holding the gateway's public key")
        parser.add_argument(
            "--dynamic-batching",
            default="{}",
            help="dynamic batching per endpoint as JSON, e.g. "
            '\'{"/encode": {"preferred_batch_size": 16, "timeout": 5}}\'',
        )
        Observability.add_observability_arguments(parser, sampling)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExecutorLaunch:
        """What :meth:`add_arguments`' flags parsed into; ConfigError for bad JSON."""
        return cls(
            uses=args.uses,
            uses_pickle=args.uses_pickle,
            name=args.name,
            uses_with=_json_object(args.uses_with, "--uses-with"),
            address=args.address,
            port=args.port,
            host=args.host,
            replica_id=args.replica_id,
            shard_id=args.shard_id,
            replicas=args.replicas,
            shards=args.shards,
            workspace=args.workspace,
            sync_workers=args.sync_workers,
            sync_calls=args.sync_calls,
            drain_timeout=args.drain_timeout,
            ready_file=args.ready_file,
            gateway_key=args.gateway_key,
            gateway_key_file=args.gateway_key_file,
            dynamic_batching=batching_by_endpoint(
                _json_object(args.dynamic_batching, "--dynamic-batching"),
                where="--dynamic-batching",
            ),
            **cls._observability_of(args),
        )


@dataclass(frozen=True, kw_only=True)
class GatewayLaunch(Observability):
    """``meshflow gateway``: the Flow's gateway.

    ``topology``: the topology's JSON, inline (containers) or the path of a file holding it;
    ``graphql_port`` None: no HTTP door; ``signing_key_file`` ``'-'``: the key comes on
    standard input.
    """

    topology: str
    host: str = LOCALHOST
    port: int = 0
    mesh: str = "direct"
    egress: str | None = None
    max_in_flight: int = 1024
    admission: AdmissionPolicy = field(default_factory=AdmissionPolicy)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    drain_timeout: float = 10.0
    graphql_port: int | None = None
    graphql_limits: GraphQLLimits = field(default_factory=GraphQLLimits)
    persisted_queries: PersistedQueries = field(default_factory=PersistedQueries)
    federation: Federation = field(default_factory=Federation)
    cors: tuple[str, ...] = ()
    static: Mapping[str, str] | None = None
    auth: JWTAuth | None = None
    signing_key_file: str | None = None
    ready_file: str | None = None

    def to_argv(self) -> list[str]:
        """The arguments of ``meshflow`` that start this gateway."""
        argv = ["gateway", "--topology", self.topology, "--host", self.host]
        argv += ["--port", str(self.port), "--mesh", self.mesh]
        argv += ["--egress", self.egress] if self.egress is not None else []
        argv += ["--max-in-flight", str(self.max_in_flight)]
        if self.admission != AdmissionPolicy():
            argv += ["--admission", _json(dataclasses.asdict(self.admission))]
        argv += ["--max-request-bytes", str(self.max_request_bytes)]
        argv += ["--drain-timeout", str(self.drain_timeout)] if self.drain_timeout != 10.0 else []
        argv += ["--graphql-port", str(self.graphql_port)] if self.graphql_port is not None else []
        if self.graphql_port is not None or self.graphql_limits != GraphQLLimits():
            argv += ["--graphql-limits", _json(dataclasses.asdict(self.graphql_limits))]
        if self.persisted_queries != PersistedQueries():
            argv += ["--persisted-queries", _json(dataclasses.asdict(self.persisted_queries))]
        if self.federation != Federation():
            argv += ["--federation", _json(self.federation.to_dict())]
        for origin in self.cors:
            argv += ["--cors", origin]
        argv += ["--static", _json(dict(self.static))] if self.static is not None else []
        argv += ["--auth", _json(self.auth.to_dict())] if self.auth is not None else []
        if self.signing_key_file is not None:
            argv += ["--signing-key-file", self.signing_key_file]
        argv += ["--ready-file", self.ready_file] if self.ready_file is not None else []
        return argv + self._observability_argv()

    @staticmethod
    def add_arguments(
        parser: argparse.ArgumentParser, sampling: Callable[[str], str] = str
    ) -> None:
        """The flags of ``meshflow gateway``."""
        parser.add_argument(
            "--topology",
            required=True,
            help="topology JSON written by the Flow (a file, or inline)",
        )
        parser.add_argument("--host", default=LOCALHOST)
        parser.add_argument("--port", type=int, default=0)
        parser.add_argument("--mesh", default="direct", choices=["direct", "envoy"])
        parser.add_argument("--egress", help="address of the gateway's Envoy sidecar (mesh envoy)")
        parser.add_argument("--max-in-flight", type=int, default=1024)
        parser.add_argument("--admission", default="{}", help="AdmissionPolicy fields as JSON")
        parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
        parser.add_argument("--drain-timeout", type=float, default=10.0)
        parser.add_argument("--graphql-port", type=int, help="serve GraphQL over HTTP on this port")
        parser.add_argument("--graphql-limits", default="{}", help="GraphQLLimits fields as JSON")
        parser.add_argument(
            "--persisted-queries",
            default="{}",
            help="PersistedQueries fields as JSON (the manifest is a path the gateway reads)",
        )
        parser.add_argument(
            "--federation",
            default="{}",
            help="Federation fields as JSON: serve as an Apollo Federation 2 subgraph",
        )
        parser.add_argument("--auth", help="JWTAuth options as JSON (secrets stay in env/files)")
        parser.add_argument(
            "--signing-key-file",
            help="Ed25519 private key (PEM) the gateway vouches for identities with "
            "('-': stdin); needed with --auth",
        )
        parser.add_argument("--static", help="URL prefix -> folder of static files, as JSON")
        parser.add_argument(
            "--cors", action="append", default=[], help="an origin whose pages may call the door"
        )
        Observability.add_observability_arguments(parser, sampling)
        parser.add_argument("--ready-file", help=argparse.SUPPRESS)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GatewayLaunch:
        """What :meth:`add_arguments`' flags parsed into; ConfigError for bad JSON."""
        graphql_limits = _options(args.graphql_limits, GraphQLLimits, "--graphql-limits")
        admission = _options(args.admission, AdmissionPolicy, "--admission")
        persisted = _options(args.persisted_queries, PersistedQueries, "--persisted-queries")
        federation = _options(args.federation, Federation, "--federation")
        auth = JWTAuth.from_dict(_json_object(args.auth, "--auth")) if args.auth else None
        return cls(
            topology=args.topology,
            host=args.host,
            port=args.port,
            mesh=args.mesh,
            egress=args.egress,
            max_in_flight=args.max_in_flight,
            admission=admission,
            max_request_bytes=args.max_request_bytes,
            drain_timeout=args.drain_timeout,
            graphql_port=args.graphql_port,
            graphql_limits=graphql_limits,
            persisted_queries=persisted,
            federation=federation,
            cors=tuple(args.cors),
            static=_json_object(args.static, "--static") if args.static else None,
            auth=auth,
            signing_key_file=args.signing_key_file,
            ready_file=args.ready_file,
            **cls._observability_of(args),
        )


def _options(text: str, cls: type[Options], flag: str) -> Options:
    """An options object from a flag's JSON (its fields); ConfigError for a bad one."""
    return typed_options(_json_object(text, flag), cls, flag)
