"""Limits of the gateway's GraphQL door (kept apart so that importing them is cheap)."""

from __future__ import annotations

from dataclasses import dataclass

from meshflow.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class GraphQLLimits:
    """Limits of the GraphQL door."""

    max_depth: int = 10
    max_aliases: int = 15
    max_tokens: int = 2000
    max_body_bytes: int = 64 * 1024 * 1024
    max_docs: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_aliases", "max_tokens", "max_body_bytes", "max_docs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"GraphQLLimits.{name} must be a whole number >= 1")
