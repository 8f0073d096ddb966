"""Type aliases shared across meshflow."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

JSON: TypeAlias = dict[str, Any]
"""A JSON-like mapping: parameters, tags and results."""

Polling: TypeAlias = Literal["ANY", "ALL", "ID"]
"""How a request reaches the shards of a deployment: one of them, all of them, or each
document to the shard that owns its id (see :mod:`meshflow.gateway.sharding`)."""

ReduceRule: TypeAlias = Literal["sum", "min", "max", "first", "last", "concat", "merge"]
"""How the values of one results key from several shards become one (``@requests(reduce=)``)."""

StateScope: TypeAlias = Literal["none", "workspace", "process"]
"""Where an Executor keeps state (``Executor.state_scope``): nowhere, in its workspace (shared
by the replicas of a shard), or in its process's memory (one replica per shard only)."""

SyncCalls: TypeAlias = Literal["auto", "thread"]
"""Where an executor runs its sync endpoint methods: ``auto`` (on the event loop while
their calls stay short, else in the worker threads) or ``thread`` (always the threads)."""
SYNC_CALLS: tuple[SyncCalls, ...] = ("auto", "thread")

REDUCE_RULES: tuple[ReduceRule, ...] = ("sum", "min", "max", "first", "last", "concat", "merge")

DEFAULT_MAX_DOCS = 1000
"""Documents in one GraphQL operation, by default (``GraphQLLimits.max_docs``)."""

DEFAULT_MAX_BATCHES = 100
"""Batches of one GraphQL ``stream`` subscription, by default (``GraphQLLimits.max_batches``)."""

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""The largest request a gateway accepts unless told otherwise (``max_request_bytes``)."""

DEFAULT_ENDPOINT = "/default"
"""The endpoint a bare ``@requests`` binds; it serves every endpoint not bound explicitly."""
