"""FlowSpec: one frozen, typed description of a Flow.

The Python builder (``Flow(...)``, ``Flow.add(...)``) and the YAML loader produce it; the local
runtime, the exporters and the CLI consume it. Each option is one field here: its default, how
a builder's value becomes typed (``coerce``) and how it is written back to YAML (``save``) sit
on the field, so the YAML keys, the save defaults and the builder's arguments all derive from
this module::

    spec = FlowSpec.build(name='shop', graphql_limits={'max_depth': 5})
    spec = spec.with_deployment(DeploymentSpec(name='enc', uses='my_pkg:Encoder'))
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from meshflow.errors import ConfigError
from meshflow.spec.admission import AdmissionPolicy
from meshflow.spec.auth import JWTAuth
from meshflow.spec.batching import DynamicBatching, batching_by_endpoint
from meshflow.spec.federation import Federation
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import PersistedQueries, read_manifest
from meshflow.spec.policy import (
    CircuitBreaker,
    HealthCheck,
    LoadBalancing,
    OutlierDetection,
    RetryPolicy,
)
from meshflow.types import DEFAULT_MAX_REQUEST_BYTES, Polling, SyncCalls

if TYPE_CHECKING:
    from meshflow.executor.executor import Executor

MESHES = ("envoy", "direct")
LOG_FORMATS = ("text", "json")
RESERVED_PATHS = ("/graphql", "/post", "/health", "/metrics")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def meta(
    *,
    coerce: Callable[[Any], Any] | None = None,
    save: Callable[[Any], Any] | None = None,
    yaml: bool = True,
) -> dict[str, Any]:
    """A spec field's metadata: ``coerce`` turns what a builder or a YAML file gives into the
    typed value, ``save`` the typed value into YAML; ``yaml=False``: not a YAML option."""
    return {"coerce": coerce, "save": save, "yaml": yaml}


def plain(value: Any) -> Any:
    """The YAML form of a typed value: dataclasses as their non-default fields, tuples as
    lists, mappings as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if _required(f) or getattr(value, f.name) != _default(f)
        }
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def saved_fields(spec: Any) -> dict[str, Any]:
    """The YAML form of ``spec``'s options that differ from their defaults."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):
        if not f.metadata.get("yaml", True):
            continue
        value = getattr(spec, f.name)
        if not _required(f) and value == _default(f):
            continue
        save = f.metadata.get("save")
        out[f.name] = save(value) if save is not None else plain(value)
    return out


def option_names(cls: type) -> frozenset[str]:
    """The YAML keys of a spec class's options."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("yaml", True))


def coerced(cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with each value made typed by its field's ``coerce``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for name, value in options.items():
        f = fields.get(name)
        coerce = f.metadata.get("coerce") if f is not None else None
        out[name] = coerce(value) if coerce is not None else value
    return out


# -- deployments ------------------------------------------------------------------------------


def _save_needs(needs: tuple[str, ...]) -> Any:
    return list(needs) if len(needs) > 1 else needs[0]


def _save_polling(polling: Mapping[str, Polling]) -> Any:
    return dict(polling) if set(polling) != {"*"} else polling["*"]


def _batching(value: Any) -> dict[str, DynamicBatching]:
    return batching_by_endpoint(value, where="uses_dynamic_batching")


def _save_batching(value: Mapping[str, DynamicBatching]) -> dict[str, Any]:
    return {endpoint: options.to_dict() for endpoint, options in value.items()}


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of a Flow: an Executor with its replicas, shards, needs, polling and
    mesh policies (what ``Flow.add(...)`` describes, validated when the builder makes it)."""

    name: str
    uses: str | type
    uses_with: Mapping[str, Any] = field(default_factory=dict)
    replicas: int = 1
    shards: int = 1
    needs: tuple[str, ...] = field(default=(), metadata=meta(save=_save_needs))
    polling: Mapping[str, Polling] = field(
        default_factory=lambda: {"*": "ANY"}, metadata=meta(save=_save_polling)
    )
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    lb: LoadBalancing = "least_request"
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    health_check: HealthCheck = field(default_factory=HealthCheck)
    outlier_detection: OutlierDetection = field(default_factory=OutlierDetection)
    circuit_breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    uses_dynamic_batching: Mapping[str, DynamicBatching] = field(
        default_factory=dict, metadata=meta(coerce=_batching, save=_save_batching)
    )
    """Dynamic batching per endpoint, over the methods' own ``@dynamic_batching``."""
    gpus: int = 0
    """Accelerators per replica (see :mod:`meshflow.spec.devices`)."""
    devices: tuple[str, ...] = ()
    """Device ids the replicas take in turn; empty: the Flow's ``CUDA_VISIBLE_DEVICES``."""
    sync_workers: int = 1
    """Threads of each replica for its sync endpoint methods."""
    sync_calls: SyncCalls = "auto"
    """Where sync endpoint methods run: ``auto`` (short calls on the event loop) or
    ``thread`` (always the worker threads); see ``docs/wire.md#sync-methods``."""
    ref: str | None = field(default=None, metadata=meta(yaml=False))
    """How a fresh interpreter imports the class (``'pkg.module:Class'``), or None when it
    must be shipped pickled (a class defined in a script)."""
    resolved: type | None = field(
        default=None, compare=False, repr=False, metadata=meta(yaml=False)
    )
    """The class ``uses`` names, as the builder imported it to check it."""

    def __post_init__(self) -> None:
        if self.ref is None and isinstance(self.uses, str):
            object.__setattr__(self, "ref", self.uses)

    @property
    def executor_class(self) -> type[Executor]:
        """The Executor class (imported in this process when the builder checked it)."""
        cls = self.uses if isinstance(self.uses, type) else self.resolved
        if cls is None:
            raise ConfigError(
                f"deployment {self.name!r}: {self.uses!r} was not imported; build the "
                "deployment with Flow.add or Flow.load_config"
            )
        return cls

    def to_dict(self) -> dict[str, Any]:
        """The YAML form of this deployment."""
        if self.ref is None:
            raise ConfigError(
                f"deployment {self.name!r} uses {self.uses!r}, a class defined in a script; "
                "a Flow YAML can only name importable classes: move it into a module"
            )
        out = saved_fields(dataclasses.replace(self, uses=self.ref))
        out["needs"] = _save_needs(self.needs)  # always written, after the options before it
        order = [f.name for f in dataclasses.fields(self)]
        return dict(sorted(out.items(), key=lambda kv: order.index(kv[0])))


# -- the Flow ---------------------------------------------------------------------------------


def check_cors(cors: Sequence[str]) -> tuple[str, ...]:
    """``cors`` checked: origins as browsers send them (scheme://host[:port]), or ``'*'``."""
    if isinstance(cors, str) or not isinstance(cors, Sequence):
        raise ConfigError(f"cors must be a list of origins, got {cors!r}")
    for origin in cors:
        if origin == "*":
            continue
        if not isinstance(origin, str) or not _ORIGIN.match(origin):
            raise ConfigError(
                f"cors: {origin!r} is not an origin such as 'https://shop.example' or "
                "'http://localhost:3000' (scheme, host and port only, no path)"
            )
    return tuple(cors)


def check_static(static: Mapping[str, str] | None) -> dict[str, str]:
    """``static`` checked: URL prefixes (not the gateway's own routes) -> existing folders."""
    if static is None:
        return {}
    if not isinstance(static, Mapping):
        raise ConfigError(f"static must map URL prefixes to folders, got {static!r}")
    checked: dict[str, str] = {}
    for prefix, folder in static.items():
        if not isinstance(prefix, str) or not prefix.startswith("/") or prefix == "/":
            raise ConfigError(f"static: {prefix!r} is not a URL prefix like '/ui'")
        prefix = prefix.rstrip("/")
        if any(prefix == r or prefix.startswith(r + "/") for r in RESERVED_PATHS):
            raise ConfigError(f"static: {prefix!r} is one of the gateway's own routes")
        if not isinstance(folder, str) or not os.path.isdir(folder):
            raise ConfigError(f"static: {prefix!r} -> {folder!r} is not a folder")
        checked[prefix] = os.path.abspath(folder)
    return checked


def _limits(value: Any) -> GraphQLLimits:
    return typed_options(value, GraphQLLimits, "graphql_limits")


def _admission(value: Any) -> AdmissionPolicy:
    return typed_options(value, AdmissionPolicy, "admission")


def _persisted(value: Any) -> PersistedQueries:
    """The persisted queries option, its manifest's path made absolute (from the working
    folder; a Flow YAML's is relative to the file) and its manifest read once to check it."""
    options = typed_options(value, PersistedQueries, "persisted_queries")
    if options.manifest is None:
        return options
    read_manifest(options.manifest)
    return dataclasses.replace(options, manifest=os.path.abspath(options.manifest))


def _federation(value: Any) -> Federation:
    if isinstance(value, bool):  # `federation: true` in a YAML file
        return Federation(enabled=value)
    return typed_options(value, Federation, "federation")


Options = TypeVar("Options", GraphQLLimits, AdmissionPolicy, PersistedQueries, Federation)


def typed_options(value: Any, cls: type[Options], name: str) -> Options:
    """An options object from itself, a mapping of its fields, or None (its defaults)."""
    if isinstance(value, Mapping):
        try:
            return cls(**value)
        except TypeError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if value is None:
        return cls()
    if not isinstance(value, cls):
        raise ConfigError(f"{name} must be a {cls.__name__} or a mapping of its fields")
    return value


def _auth(value: Any) -> JWTAuth | None:
    if isinstance(value, Mapping):
        value = JWTAuth.from_dict(value)
    if value is not None and not isinstance(value, JWTAuth):
        raise ConfigError(f"auth must be a JWTAuth or a mapping of its options, got {value!r}")
    return value.with_paths_from(".") if value is not None else None


def _save_auth(auth: JWTAuth) -> dict[str, Any]:
    """Issuer, audience and what differs from the defaults; key material is never written
    (only where it is)."""
    defaults = JWTAuth(issuer="i", audience="a", secret_env="X").to_dict()
    return {
        k: v
        for k, v in auth.to_dict().items()
        if k in ("issuer", "audience") or (v != defaults.get(k) and v not in (None, {}))
    }


def _name(name: str | None) -> str:
    return name or "flow"


def _whole(value: Any, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= low


ENVOY_PROXIES = ("sidecar", "host")
"""``mesh='envoy'``: an Envoy per replica plus the gateway's, or one Envoy for the Flow."""


@dataclass(frozen=True, kw_only=True)
class FlowSpec:
    """A Flow's options and deployments (see :class:`meshflow.Flow` for what each means)."""

    name: str = field(default="flow", metadata=meta(coerce=_name, yaml=False))
    port: int | None = None
    mesh: str = "envoy"
    host: str = "127.0.0.1"
    workspace: str = "workspace"
    timeout_ready: float = 60.0
    max_in_flight: int = 1024
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    log_dir: str | None = None
    graphql: bool = True
    graphql_port: int | None = None
    graphql_limits: GraphQLLimits = field(
        default_factory=GraphQLLimits, metadata=meta(coerce=_limits)
    )
    admission: AdmissionPolicy = field(
        default_factory=AdmissionPolicy, metadata=meta(coerce=_admission)
    )
    persisted_queries: PersistedQueries = field(
        default_factory=PersistedQueries, metadata=meta(coerce=_persisted)
    )
    federation: Federation = field(default_factory=Federation, metadata=meta(coerce=_federation))
    envoy_concurrency: int = 1
    envoy_proxy: str = "sidecar"
    fork_server: bool = True
    auth: JWTAuth | None = field(default=None, metadata=meta(coerce=_auth, save=_save_auth))
    metrics: bool = False
    tracing: bool | float | str = False
    log_format: str = "text"
    static: Mapping[str, str] = field(default_factory=dict, metadata=meta(coerce=check_static))
    cors: tuple[str, ...] = field(default=(), metadata=meta(coerce=check_cors))
    deployments: tuple[DeploymentSpec, ...] = field(default=(), metadata=meta(yaml=False))

    def __post_init__(self) -> None:
        for label, value in (("port", self.port), ("graphql_port", self.graphql_port)):
            if value is not None and not (_whole(value, 1) and value < 65536):
                raise ConfigError(
                    f"{label} must be a number from 1 to 65535 or None, got {value!r}"
                )
        if self.mesh not in MESHES:
            raise ConfigError(f"mesh={self.mesh!r} is not supported; use one of {MESHES}")
        if self.max_in_flight < 1 or self.max_request_bytes < 1024:
            raise ConfigError("max_in_flight must be >= 1 and max_request_bytes >= 1024")
        if not _whole(self.envoy_concurrency, 1):
            raise ConfigError("envoy_concurrency must be a whole number >= 1")
        if self.envoy_proxy not in ENVOY_PROXIES:
            raise ConfigError(
                f"envoy_proxy must be one of {ENVOY_PROXIES}, got {self.envoy_proxy!r}"
            )
        if self.envoy_proxy == "host" and self.mesh != "envoy":
            raise ConfigError(
                f"envoy_proxy='host' needs mesh='envoy' (mesh={self.mesh!r} has no Envoy)"
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be 'text' or 'json', got {self.log_format!r}")
        if not isinstance(self.metrics, bool):
            raise ConfigError(f"metrics must be true or false, got {self.metrics!r}")
        if not isinstance(self.fork_server, bool):
            raise ConfigError(f"fork_server must be true or false, got {self.fork_server!r}")

    @classmethod
    def build(cls, **options: Any) -> FlowSpec:
        """A spec from a builder's (or a YAML file's) options: mappings become their typed
        objects (``graphql_limits``, ``auth``), ``static`` and ``cors`` are checked."""
        unknown = set(options) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown Flow option(s): {', '.join(sorted(unknown))}")
        return cls(**coerced(cls, options))

    def options(self) -> dict[str, Any]:
        """The YAML ``with:`` options that differ from their defaults."""
        return saved_fields(self)

    def deployment(self, name: str) -> DeploymentSpec:
        """The deployment called ``name``."""
        for dep in self.deployments:
            if dep.name == name:
                return dep
        known = ", ".join(d.name for d in self.deployments) or "none"
        raise ConfigError(f"no deployment named {name!r} (known: {known})")

    def with_deployment(self, dep: DeploymentSpec) -> FlowSpec:
        """This spec with ``dep`` added, or replacing the deployment of the same name."""
        names = [d.name for d in self.deployments]
        if dep.name in names:
            deps = tuple(dep if d.name == dep.name else d for d in self.deployments)
        else:
            deps = (*self.deployments, dep)
        return dataclasses.replace(self, deployments=deps)

    def shards(self) -> Iterator[tuple[DeploymentSpec, int]]:
        """Every (deployment, shard) of the Flow, in order."""
        for dep in self.deployments:
            for shard in range(dep.shards):
                yield dep, shard


WITH_KEYS = option_names(FlowSpec)
"""The keys of a Flow YAML's ``with:``."""
EXECUTOR_KEYS = option_names(DeploymentSpec)
"""The keys of one entry of a Flow YAML's ``executors:``."""
