"""meshflow: multimodal AI services from Documents, Executors and Flows.

Importing meshflow starts nothing, reads no environment variable and installs no signal
handler. ``Flow``, the clients and ``mint_token`` load on first use: an executor's process
(``from meshflow import Executor``) never loads the gateway's JWT and cryptography libraries.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from meshflow.document import Document, DocumentArray
from meshflow.errors import (
    BadRequestError,
    ConfigError,
    DeadlineExceeded,
    ExecutorError,
    FlowStartError,
    ForbiddenError,
    MeshflowError,
    OverloadedError,
    RequestError,
    ShareExceededError,
    UnauthenticatedError,
    UnavailableError,
)
from meshflow.executor import Executor, RuntimeArgs, dynamic_batching, requests
from meshflow.identity import Identity
from meshflow.spec.admission import AdmissionPolicy
from meshflow.spec.auth import JWTAuth
from meshflow.spec.batching import DynamicBatching
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import PersistedQueries
from meshflow.spec.policy import CircuitBreaker, HealthCheck, OutlierDetection, RetryPolicy

if TYPE_CHECKING:
    from meshflow.client import AsyncClient, Client, Response
    from meshflow.flow import Flow
    from meshflow.gateway.auth import mint as mint_token

_LAZY = {
    "AsyncClient": ("meshflow.client", "AsyncClient"),
    "Client": ("meshflow.client", "Client"),
    "Response": ("meshflow.client", "Response"),
    "Flow": ("meshflow.flow", "Flow"),
    "mint_token": ("meshflow.gateway.auth", "mint"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'meshflow' has no attribute {name!r}") from None
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "AdmissionPolicy",
    "AsyncClient",
    "BadRequestError",
    "CircuitBreaker",
    "Client",
    "ConfigError",
    "DeadlineExceeded",
    "Document",
    "DocumentArray",
    "DynamicBatching",
    "Executor",
    "ExecutorError",
    "Flow",
    "FlowStartError",
    "ForbiddenError",
    "GraphQLLimits",
    "HealthCheck",
    "Identity",
    "JWTAuth",
    "MeshflowError",
    "OutlierDetection",
    "OverloadedError",
    "PersistedQueries",
    "RequestError",
    "Response",
    "RetryPolicy",
    "RuntimeArgs",
    "ShareExceededError",
    "UnauthenticatedError",
    "UnavailableError",
    "__version__",
    "dynamic_batching",
    "mint_token",
    "requests",
]
