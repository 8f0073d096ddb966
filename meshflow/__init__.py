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
    MeshflowError,
    OverloadedError,
    RequestError,
    UnavailableError,
)
from meshflow.executor import Executor, RuntimeArgs, requests
from meshflow.flow import Flow
from meshflow.gateway.limits import GraphQLLimits
from meshflow.mesh.policy import CircuitBreaker, HealthCheck, OutlierDetection, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "BadRequestError",
    "CircuitBreaker",
    "Client",
    "ConfigError",
    "DeadlineExceeded",
    "Document",
    "DocumentArray",
    "Executor",
    "ExecutorError",
    "Flow",
    "FlowStartError",
    "GraphQLLimits",
    "HealthCheck",
    "MeshflowError",
    "OutlierDetection",
    "OverloadedError",
    "RequestError",
    "Response",
    "RetryPolicy",
    "RuntimeArgs",
    "UnavailableError",
    "__version__",
    "requests",
]
