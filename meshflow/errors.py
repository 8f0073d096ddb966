"""The exceptions meshflow raises, all rooted at :class:`MeshflowError`.

::

    MeshflowError
    ├── ConfigError            a Flow, Executor or YAML file is wrong; raised before anything runs
    ├── FlowStartError         a process of the Flow did not come up (names it, tail of its log)
    └── RequestError           one request failed; the Flow keeps serving
        ├── ExecutorError      an executor endpoint raised, or its process died mid-request
        ├── BadRequestError    the request is malformed or too large
        ├── OverloadedError    the gateway is at its in-flight limit and shed the request
        ├── DeadlineExceeded   the request's timeout expired somewhere on its path
        ├── UnavailableError   the gateway or an executor cannot be reached
        ├── UnauthenticatedError  no token, or a token the gateway cannot verify
        │   └── UnverifiedIdentityError  an executor got an identity the gateway did not vouch for
        └── ForbiddenError     a valid token without the scope the endpoint needs

Each :class:`RequestError` maps to one gRPC status code (``grpc_code``) and one GraphQL
error code (``graphql_code``), so every door of the gateway answers the same failure alike.
"""

from __future__ import annotations

from typing import ClassVar


class MeshflowError(Exception):
    """Base of every error meshflow raises on purpose."""


class ConfigError(MeshflowError):
    """A Flow, Executor or configuration file is invalid."""


class FlowStartError(MeshflowError):
    """A process of the Flow failed to start or to become healthy."""

    def __init__(self, message: str, *, process: str, log_tail: str = "") -> None:
        self.process = process
        self.log_tail = log_tail
        text = message
        if log_tail:
            text += f"\n--- last lines of the log of {process} ---\n{log_tail.rstrip()}"
        super().__init__(text)


class RequestError(MeshflowError):
    """A request failed. ``grpc_code`` is the name of the matching ``grpc.StatusCode``."""

    grpc_code: ClassVar[str] = "INTERNAL"
    graphql_code: ClassVar[str] = "INTERNAL_SERVER_ERROR"


class ExecutorError(RequestError):
    """An executor endpoint raised (or its process died) while serving the request."""

    grpc_code = "INTERNAL"
    graphql_code = "EXECUTOR_ERROR"

    def __init__(
        self,
        message: str,
        *,
        executor: str = "",
        endpoint: str = "",
        exception_type: str = "",
    ) -> None:
        self.executor = executor
        self.endpoint = endpoint
        self.exception_type = exception_type
        self.message = message
        where = f"executor {executor!r}" if executor else "an executor"
        if endpoint:
            where += f" at endpoint {endpoint!r}"
        kind = f"{exception_type}: " if exception_type else ""
        super().__init__(f"{where} failed: {kind}{message}")


class BadRequestError(RequestError):
    """The request is malformed, or larger than the gateway accepts."""

    grpc_code = "INVALID_ARGUMENT"
    graphql_code = "BAD_USER_INPUT"


class OverloadedError(RequestError):
    """The gateway has as many requests in flight as it allows and refused this one."""

    grpc_code = "RESOURCE_EXHAUSTED"
    graphql_code = "OVERLOADED"


class DeadlineExceeded(RequestError):
    """The request's timeout expired before it finished."""

    grpc_code = "DEADLINE_EXCEEDED"
    graphql_code = "TIMEOUT"


class UnavailableError(RequestError):
    """The gateway or an executor could not be reached."""

    grpc_code = "UNAVAILABLE"
    graphql_code = "UNAVAILABLE"


class UnauthenticatedError(RequestError):
    """The request carries no token, or one the gateway refuses (bad signature, expired...)."""

    grpc_code = "UNAUTHENTICATED"
    graphql_code = "UNAUTHENTICATED"


class UnverifiedIdentityError(UnauthenticatedError):
    """An executor refused a request whose identity carries no valid voucher of the gateway
    (no signature, a wrong or expired one, another request's): only the gateway says who
    the caller is."""


class ForbiddenError(RequestError):
    """The token is valid but lacks the scope the endpoint (or operation) needs."""

    grpc_code = "PERMISSION_DENIED"
    graphql_code = "FORBIDDEN"

    def __init__(self, message: str, *, scope: str | None = None) -> None:
        self.scope = scope
        """The scope that was missing, when one was."""
        super().__init__(message)


REFUSALS: tuple[type[RequestError], ...] = (
    BadRequestError,
    OverloadedError,
    DeadlineExceeded,
    UnavailableError,
    UnauthenticatedError,
    ForbiddenError,
)
"""The failures the gateway itself answers (not an executor's): clients map a status back
onto these by class name (a stream's answer) or by ``graphql_code``."""
