"""Executors: product logic in ``@requests`` methods, each served as a gRPC microservice."""

from meshflow.executor.decorators import dynamic_batching, requests
from meshflow.executor.executor import Executor, RuntimeArgs

__all__ = ["Executor", "RuntimeArgs", "dynamic_batching", "requests"]
