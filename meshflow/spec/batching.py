"""Dynamic batching of an endpoint: concurrent requests share one call of the method.

Declared on the method (``@dynamic_batching(preferred_batch_size=16, timeout=5)``) or per
deployment and endpoint (``Flow.add(uses_dynamic_batching={'/encode': {...}})``, the same in
Flow YAML), which wins over the decorator. See ``docs/batching.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from meshflow.errors import ConfigError

AUTO: Literal["auto"] = "auto"


@dataclass(frozen=True, kw_only=True)
class DynamicBatching:
    """How one endpoint batches the documents of concurrent requests (per replica).

    Args:
        preferred_batch_size: documents a batch aims at; a batch goes as soon as it has that
            many. A request with more runs alone (never split).
        timeout: milliseconds the first waiting request may wait for the batch to fill
            (Jina's meaning), or ``'auto'``: no fixed wait; a request runs at once when
            nothing else of the endpoint runs, and requests arriving while a call runs go
            together as the next batch as soon as it ends (see ``docs/batching.md``).

    ::

        DynamicBatching(preferred_batch_size=32, timeout='auto')
    """

    preferred_batch_size: int = 16
    timeout: float | Literal["auto"] = AUTO

    def __post_init__(self) -> None:
        size = self.preferred_batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(
                f"DynamicBatching.preferred_batch_size must be a whole number >= 1, got {size!r}"
            )
        timeout = self.timeout
        if timeout != AUTO and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
        ):
            raise ConfigError(
                f"DynamicBatching.timeout must be milliseconds >= 0 or 'auto', got {timeout!r}"
            )

    @property
    def adaptive(self) -> bool:
        return self.timeout == AUTO

    def to_dict(self) -> dict[str, Any]:
        return {"preferred_batch_size": self.preferred_batch_size, "timeout": self.timeout}

    @classmethod
    def from_value(cls, value: Any, *, where: str) -> DynamicBatching:
        """An instance from itself or a mapping of its fields; ``where`` names it in errors."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"preferred_batch_size", "timeout"}
            if unknown:
                raise ConfigError(
                    f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                    "allowed: preferred_batch_size, timeout"
                )
            try:
                return cls(**value)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        raise ConfigError(
            f"{where} must be a DynamicBatching or a mapping of preferred_batch_size and "
            f"timeout, got {value!r}"
        )


def batching_by_endpoint(value: Any, *, where: str) -> dict[str, DynamicBatching]:
    """``{endpoint: DynamicBatching or mapping}`` checked, endpoints written ``'/name'``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where} must map endpoints to batching options, e.g. "
            f"{{'/encode': {{'preferred_batch_size': 16, 'timeout': 5}}}}, got {value!r}"
        )
    out: dict[str, DynamicBatching] = {}
    for endpoint, options in value.items():
        if not isinstance(endpoint, str) or not endpoint.strip("/"):
            raise ConfigError(f"{where}: {endpoint!r} is not an endpoint name such as '/encode'")
        name = endpoint if endpoint.startswith("/") else "/" + endpoint
        out[name] = DynamicBatching.from_value(options, where=f"{where}[{name!r}]")
    return out
