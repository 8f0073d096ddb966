"""Executors: product logic in ``@requests`` methods, each served as a gRPC microservice."""

from meshflow.executor.decorators import dynamic_batching, requests
from meshflow.executor.doctypes import doc_field
from meshflow.executor.executor import Executor, RuntimeArgs

__all__ = ["Executor", "RuntimeArgs", "doc_field", "dynamic_batching", "requests"]
