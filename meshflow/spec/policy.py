"""Typed options of a deployment's traffic in the Envoy mesh.

Each is a small immutable object validated at construction, used as ``Flow.add(retries=...,
health_check=..., outlier_detection=..., circuit_breaker=..., lb=...)`` and written in Flow
YAML as a mapping of the same fields::

    f.add(uses=Encoder, replicas=3, retries=RetryPolicy(attempts=3, per_try_timeout=2.0))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from meshflow.errors import ConfigError

LoadBalancing = Literal["least_request", "round_robin", "random"]
LOAD_BALANCING: tuple[LoadBalancing, ...] = ("least_request", "round_robin", "random")
RETRY_ON = ("connect-failure", "refused-stream", "reset", "unavailable", "gateway-error", "5xx")

P = TypeVar("P", bound="_Policy")


class _Policy:
    def _positive(self, *names: str, allow_none: bool = False) -> None:
        for name in names:
            value = getattr(self, name)
            if value is None and allow_none:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(
                    f"{type(self).__name__}.{name} must be a positive number, got {value!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_value(cls: type[P], value: Any, *, deployment: str, option: str) -> P:
        """Accept an instance, a mapping of its fields (YAML) or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            unknown = set(value) - names
            if unknown:
                raise ConfigError(
                    f"deployment {deployment!r}: {option} has unknown field(s) "
                    f"{', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(names))}"
                )
            data = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            return cls(**data)
        raise ConfigError(
            f"deployment {deployment!r}: {option} must be a {cls.__name__} or a mapping, "
            f"got {value!r}"
        )


@dataclass(frozen=True, kw_only=True)
class RetryPolicy(_Policy):
    """Retries of a failed call, each on a different replica than the tries before.

    Args:
        attempts: tries in all, the first included (1 disables retries).
        per_try_timeout: seconds each try may take; None: only the overall timeout.
        retry_on: Envoy retry conditions; by default the failures that mean the call did not
            complete: connection failure, refused stream, reset, gRPC UNAVAILABLE.
    """

    attempts: int = 3
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ("connect-failure", "refused-stream", "reset", "unavailable")

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigError(f"RetryPolicy.attempts must be a whole number, got {self.attempts!r}")
        if not 1 <= self.attempts <= 10:
            raise ConfigError(f"RetryPolicy.attempts must be 1 to 10, got {self.attempts}")
        self._positive("per_try_timeout", allow_none=True)
        bad = [r for r in self.retry_on if r not in RETRY_ON]
        if bad or not self.retry_on:
            raise ConfigError(
                f"RetryPolicy.retry_on must name some of {', '.join(RETRY_ON)}, got {bad or '[]'}"
            )


@dataclass(frozen=True, kw_only=True)
class HealthCheck(_Policy):
    """Active gRPC health checks of every replica, from the gateway's sidecar.

    While a deployment gets no traffic, replicas not (yet) healthy are checked every
    ``no_traffic_interval`` seconds, so one that starts late is taken in quickly, and healthy
    ones every ``no_traffic_healthy_interval``; with traffic, every ``interval``.
    """

    interval: float = 1.0
    timeout: float = 1.0
    no_traffic_interval: float = 0.25
    no_traffic_healthy_interval: float = 2.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1

    def __post_init__(self) -> None:
        self._positive(
            "interval",
            "timeout",
            "no_traffic_interval",
            "no_traffic_healthy_interval",
            "unhealthy_threshold",
            "healthy_threshold",
        )


@dataclass(frozen=True, kw_only=True)
class OutlierDetection(_Policy):
    """Ejects a replica from load balancing after consecutive failures, for a while."""

    consecutive_failures: int = 3
    interval: float = 1.0
    base_ejection_time: float = 5.0
    max_ejection_percent: int = 100

    def __post_init__(self) -> None:
        self._positive("consecutive_failures", "interval", "base_ejection_time")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ConfigError("OutlierDetection.max_ejection_percent must be 0 to 100")


@dataclass(frozen=True, kw_only=True)
class CircuitBreaker(_Policy):
    """Limits on what the gateway's sidecar sends to one deployment at once; past them calls
    fail fast instead of queueing."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 32

    def __post_init__(self) -> None:
        self._positive("max_connections", "max_pending_requests", "max_requests", "max_retries")


def check_lb(value: Any, *, deployment: str) -> LoadBalancing:
    if value not in LOAD_BALANCING:
        raise ConfigError(
            f"deployment {deployment!r}: lb must be one of {', '.join(LOAD_BALANCING)}, "
            f"got {value!r}"
        )
    lb: LoadBalancing = value
    return lb
