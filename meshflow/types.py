"""Type aliases shared across meshflow."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

JSON: TypeAlias = dict[str, Any]
"""A JSON-like mapping: parameters, tags and results."""

Polling: TypeAlias = Literal["ANY", "ALL"]
"""How a request reaches the shards of a deployment: one of them, or all of them."""

DEFAULT_ENDPOINT = "/default"
"""The endpoint a bare ``@requests`` binds; it serves every endpoint not bound explicitly."""
