"""meshflow: multimodal AI services from Documents, Executors and Flows.

Importing meshflow starts nothing, reads no environment variable and installs no signal
handler.
"""

from meshflow.client import AsyncClient, Client, Response
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
from meshflow.executor import Executor, RuntimeArgs, doc_field, dynamic_batching, requests
from meshflow.flow import Flow
from meshflow.gateway.auth import mint as mint_token
from meshflow.identity import Identity
from meshflow.spec.admission import AdmissionPolicy
from meshflow.spec.auth import JWTAuth
from meshflow.spec.batching import DynamicBatching
from meshflow.spec.federation import Federation
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import PersistedQueries
from meshflow.spec.policy import CircuitBreaker, HealthCheck, OutlierDetection, RetryPolicy

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
    "Federation",
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
    "doc_field",
    "dynamic_batching",
    "mint_token",
    "requests",
]
