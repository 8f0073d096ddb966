"""The public API is exported once, and importing meshflow has no side effects."""

from __future__ import annotations

import subprocess
import sys

import meshflow


def test_exported_names() -> None:
    assert sorted(meshflow.__all__) == sorted(
        [
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
    )
    for name in meshflow.__all__:
        assert getattr(meshflow, name) is not None


def test_every_error_derives_from_meshflow_error() -> None:
    errors = [getattr(meshflow, n) for n in meshflow.__all__ if n.endswith(("Error", "Exceeded"))]
    assert all(issubclass(e, meshflow.MeshflowError) for e in errors)


def test_import_starts_nothing_and_sets_no_signal_handler(tmp_path: object) -> None:
    code = (
        "import signal, threading, os\n"
        "before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}\n"
        "import meshflow\n"
        "after = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}\n"
        "assert before == after, (before, after)\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert not os.path.exists('workspace')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=str(tmp_path))
