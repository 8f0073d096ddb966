"""Building one deployment of a Flow (``Flow.add``): its arguments checked, its Executor
imported to check it, into a :class:`~meshflow.spec.flow.DeploymentSpec`."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from meshflow.errors import ConfigError
from meshflow.executor.executor import Executor, check_replicas
from meshflow.executor.loader import (
    check_executor_class,
    class_ref,
    load_class,
    read_executor_yaml,
)
from meshflow.gateway.topology import normalise_polling
from meshflow.spec.batching import DynamicBatching, batching_by_endpoint
from meshflow.spec.devices import check_devices
from meshflow.spec.flow import DeploymentSpec
from meshflow.spec.policy import (
    CircuitBreaker,
    HealthCheck,
    OutlierDetection,
    RetryPolicy,
    check_lb,
)
from meshflow.types import SYNC_CALLS, Polling, SyncCalls

log = logging.getLogger("meshflow.flow")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")


def make_deployment(
    *,
    uses: Any,
    name: str,
    uses_with: Mapping[str, Any] | None,
    replicas: Any,
    shards: Any,
    needs: str | Sequence[str],
    polling: str | Mapping[str, str],
    timeout: Any,
    env: Mapping[str, str] | None,
    lb: Any = "least_request",
    retries: Any = None,
    health_check: Any = None,
    outlier_detection: Any = None,
    circuit_breaker: Any = None,
    uses_dynamic_batching: Any = None,
    gpus: Any = 0,
    devices: Any = None,
    sync_workers: Any = 1,
    sync_calls: Any = "auto",
) -> DeploymentSpec:
    """Validate the arguments of ``Flow.add`` and build a :class:`DeploymentSpec`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"deployment name {name!r} is invalid: use a letter, then letters, digits, '_' or '-'"
        )
    for label, value in (
        ("replicas", replicas),
        ("shards", shards),
        ("sync_workers", sync_workers),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"deployment {name!r}: {label} must be a whole number >= 1")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    ):
        raise ConfigError(f"deployment {name!r}: timeout must be a positive number of seconds")
    if sync_calls not in SYNC_CALLS:
        raise ConfigError(
            f"deployment {name!r}: sync_calls is {sync_calls!r}; use one of "
            f"{', '.join(map(repr, SYNC_CALLS))}"
        )
    if uses_with is not None and not isinstance(uses_with, Mapping):
        raise ConfigError(f"deployment {name!r}: uses_with must be a mapping of arguments")
    merged_with = dict(uses_with or {})
    hub_cls = _hub_class(uses)
    if hub_cls is not None:
        check_replicas(hub_cls, replicas, deployment=name)
    elif isinstance(uses, str):
        if uses.endswith((".yml", ".yaml")):
            uses, from_yaml = read_executor_yaml(uses)
            merged_with = {**from_yaml, **merged_with}
        # fails early, with a clear message, for unknown modules or classes
        check_replicas(load_class(uses), replicas, deployment=name)
    elif isinstance(uses, type):
        check_executor_class(uses, getattr(uses, "__qualname__", repr(uses)))
        check_replicas(uses, replicas, deployment=name)
    else:
        raise ConfigError(
            f"deployment {name!r}: uses must be an Executor class, 'pkg.module:Class', "
            f"'path/file.py:Class' or 'executor.yml', got {uses!r}"
        )
    polled = normalise_polling(polling, deployment=name)
    cls = hub_cls or (load_class(uses) if isinstance(uses, str) else uses)
    if shards > 1:
        _warn_writes_to_any_shard(cls, polled, deployment=name)
    batching = _batching(cls, uses_dynamic_batching, deployment=name)
    if env is not None and not isinstance(env, Mapping):
        raise ConfigError(f"deployment {name!r}: env must be a mapping of variables")
    gpus, devices = check_devices(gpus, devices, env or {}, deployment=name)
    needs_tuple = (needs,) if isinstance(needs, str) else tuple(needs)
    if not needs_tuple or not all(isinstance(n, str) for n in needs_tuple):
        raise ConfigError(f"deployment {name!r}: needs must name deployments or 'gateway'")
    return DeploymentSpec(
        name=name,
        uses=uses,
        ref=uses if isinstance(uses, str) else class_ref(uses),
        resolved=cls,
        uses_with=merged_with,
        replicas=replicas,
        shards=shards,
        needs=needs_tuple,
        polling=polled,
        timeout=float(timeout) if timeout is not None else None,
        env=dict(env or {}),
        lb=check_lb(lb, deployment=name),
        retries=RetryPolicy.from_value(retries, deployment=name, option="retries"),
        health_check=HealthCheck.from_value(health_check, deployment=name, option="health_check"),
        outlier_detection=OutlierDetection.from_value(
            outlier_detection, deployment=name, option="outlier_detection"
        ),
        circuit_breaker=CircuitBreaker.from_value(
            circuit_breaker, deployment=name, option="circuit_breaker"
        ),
        uses_dynamic_batching=batching,
        gpus=gpus,
        devices=devices,
        sync_workers=sync_workers,
        sync_calls=cast(SyncCalls, sync_calls),
    )


def _hub_class(uses: Any) -> type[Executor] | None:
    """The stand-in class of a ``hub://`` reference (syntax checked now; the version is
    chosen and the environment built when the Flow starts), or None for other ``uses``."""
    if not (isinstance(uses, str) and uses.startswith("hub://")):
        return None
    # lazy: the hub (packaging, index client) loads only for Flows that use it
    from meshflow.hub.prepare import hub_placeholder
    from meshflow.hub.reference import HubRef

    return hub_placeholder(HubRef.parse(uses))


def _batching(cls: type[Executor], value: Any, *, deployment: str) -> dict[str, DynamicBatching]:
    """``uses_dynamic_batching`` checked: typed options, for endpoints ``cls`` serves."""
    where = f"deployment {deployment!r}: uses_dynamic_batching"
    batching = batching_by_endpoint(value, where=where)
    if getattr(cls, "hub_ref", None):  # a hub executor: its endpoints are known once it runs
        return batching
    endpoints = getattr(cls, "endpoints", {})
    unknown = sorted(set(batching) - set(endpoints))
    if unknown:
        raise ConfigError(
            f"deployment {deployment!r}: uses_dynamic_batching names {', '.join(unknown)}, "
            f"which {cls.__name__} does not serve; its endpoints: "
            f"{', '.join(sorted(endpoints)) or 'none'}"
        )
    return batching


def _warn_writes_to_any_shard(
    cls: type[Executor], polling: Mapping[str, Polling], *, deployment: str
) -> None:
    """Log the endpoints of a stateful sharded Executor that change state but reach one shard
    whatever the documents' ids: their writes land on a shard the reads may not look at."""
    if getattr(cls, "state_scope", "none") == "none":
        return
    endpoints = getattr(cls, "endpoints", {})
    astray = sorted(
        name
        for name, spec in endpoints.items()
        if not spec.read_only and (polling.get(name) or polling.get("*", "ANY")) == "ANY"
    )
    if astray:
        log.warning(
            "deployment %r: %s keeps state (state_scope=%r) in shards, but %s polled ANY "
            "reach(es) one shard whatever the document ids; poll writes 'ID' so that each "
            "document goes to the shard owning it",
            deployment,
            cls.__name__,
            cls.state_scope,
            ", ".join(astray),
        )
