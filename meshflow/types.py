"""Type aliases shared across meshflow."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

JSON: TypeAlias = dict[str, Any]
"""A JSON-like mapping: parameters, tags and results."""

Polling: TypeAlias = Literal["ANY", "ALL"]
"""How a request reaches the shards of a deployment: one of them, or all of them."""

DEFAULT_MAX_DOCS = 1000
"""Documents in one GraphQL operation, by default (``GraphQLLimits.max_docs``)."""

DEFAULT_MAX_BATCHES = 100
"""Batches of one GraphQL ``stream`` subscription, by default (``GraphQLLimits.max_batches``)."""

DEFAULT_ENDPOINT = "/default"
"""The endpoint a bare ``@requests`` binds; it serves every endpoint not bound explicitly."""
