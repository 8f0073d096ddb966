"""The exceptions meshflow raises, all rooted at :class:`MeshflowError`.

::

    MeshflowError
    ├── ConfigError            a Flow, Executor or YAML file is wrong; raised before anything runs
    ├── FlowStartError         a process of the Flow did not come up (names it, tail of its log)
    └── RequestError           one request failed; the Flow keeps serving
        ├── ExecutorError      an executor endpoint raised, or its process died mid-request
        ├── BadRequestError    the request is malformed or too large
        │   └── TooManyDocumentsError  more documents in one request than the gateway takes
        ├── OverloadedError    the gateway is full (in flight and queued) and shed the request
        │   └── ShareExceededError  one caller holds its whole share of the gateway's queue
        ├── DeadlineExceeded   the request's timeout expired somewhere on its path
        ├── UnavailableError   the gateway or an executor cannot be reached
        ├── UnauthenticatedError  no token, or a token the gateway cannot verify
        │   └── UnverifiedIdentityError  an executor got an identity the gateway did not vouch for
        └── ForbiddenError     a valid token without the scope the endpoint needs

Every class carries its three codes, the one place they are written:

=========================  ====================  =======================  ====
class                      ``grpc_code``         ``graphql_code``         HTTP
=========================  ====================  =======================  ====
MeshflowError              INTERNAL              INTERNAL_SERVER_ERROR    500
ConfigError                FAILED_PRECONDITION   CONFIG_ERROR             500
FlowStartError             UNAVAILABLE           FLOW_START_FAILED        503
RequestError               INTERNAL              INTERNAL_SERVER_ERROR    500
ExecutorError              INTERNAL              EXECUTOR_ERROR           502
BadRequestError            INVALID_ARGUMENT      BAD_USER_INPUT           400
TooManyDocumentsError      INVALID_ARGUMENT      TOO_MANY_DOCUMENTS       413
OverloadedError            RESOURCE_EXHAUSTED    OVERLOADED               503
ShareExceededError         RESOURCE_EXHAUSTED    TOO_MANY_REQUESTS        429
DeadlineExceeded           DEADLINE_EXCEEDED     TIMEOUT                  504
UnavailableError           UNAVAILABLE           UNAVAILABLE              503
UnauthenticatedError       UNAUTHENTICATED       UNAUTHENTICATED          401
UnverifiedIdentityError    UNAUTHENTICATED       UNAUTHENTICATED          401
ForbiddenError             PERMISSION_DENIED     FORBIDDEN                403
=========================  ====================  =======================  ====

Every door and client derives its mapping from these attributes (the gRPC door aborts with
``grpc_code``, GraphQL errors carry ``graphql_code`` in ``extensions.code``, ``POST /post``
answers with ``http_status``; clients read a status back with :func:`for_grpc_code` and
:func:`for_graphql_code`): adding an error is adding one class here, with its three codes.
"""

from __future__ import annotations

from typing import ClassVar


class MeshflowError(Exception):
    """Base of every error meshflow raises on purpose.

    ``grpc_code`` is the name of a ``grpc.StatusCode`` member, ``graphql_code`` the
    ``extensions.code`` of a GraphQL error, ``http_status`` the status of an HTTP answer.
    """

    grpc_code: ClassVar[str] = "INTERNAL"
    graphql_code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    http_status: ClassVar[int] = 500


class ConfigError(MeshflowError):
    """A Flow, Executor or configuration file is invalid."""

    grpc_code = "FAILED_PRECONDITION"
    graphql_code = "CONFIG_ERROR"
    http_status = 500


class FlowStartError(MeshflowError):
    """A process of the Flow failed to start or to become healthy."""

    grpc_code = "UNAVAILABLE"
    graphql_code = "FLOW_START_FAILED"
    http_status = 503

    def __init__(self, message: str, *, process: str, log_tail: str = "") -> None:
        self.process = process
        self.log_tail = log_tail
        text = message
        if log_tail:
            text += f"\n--- last lines of the log of {process} ---\n{log_tail.rstrip()}"
        super().__init__(text)


class RequestError(MeshflowError):
    """A request failed (in the gateway, unless a subclass says where)."""

    grpc_code = "INTERNAL"
    graphql_code = "INTERNAL_SERVER_ERROR"
    http_status = 500

    def extensions(self) -> dict[str, object]:
        """What a JSON answer says of this error beside its message: its ``code`` and the
        fields a subclass adds (the executor that failed, the missing scope)."""
        return {"code": self.graphql_code}


class ExecutorError(RequestError):
    """An executor endpoint raised (or its process died) while serving the request."""

    grpc_code = "INTERNAL"
    graphql_code = "EXECUTOR_ERROR"
    http_status = 502

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

    def extensions(self) -> dict[str, object]:
        return {
            **super().extensions(),
            "executor": self.executor,
            "endpoint": self.endpoint,
            "exceptionType": self.exception_type,
        }


class BadRequestError(RequestError):
    """The request is malformed, or larger than the gateway accepts."""

    grpc_code = "INVALID_ARGUMENT"
    graphql_code = "BAD_USER_INPUT"
    http_status = 400


class TooManyDocumentsError(BadRequestError):
    """One request holds more documents than the gateway takes (``GraphQLLimits.max_docs``)."""

    grpc_code = "INVALID_ARGUMENT"
    graphql_code = "TOO_MANY_DOCUMENTS"
    http_status = 413


class OverloadedError(RequestError):
    """The gateway has as many requests in flight and waiting as it allows, or this one
    could not start before its deadline, and refused it without doing any of its work.

    ``retry_after`` (seconds) is when a retry has a fair chance: HTTP answers carry it as
    ``Retry-After``, gRPC as the ``grpc-retry-pushback-ms`` trailer, which gRPC clients and
    Envoy honour; :class:`~meshflow.Client` retries these within the call's deadline.
    """

    grpc_code = "RESOURCE_EXHAUSTED"
    graphql_code = "OVERLOADED"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ShareExceededError(OverloadedError):
    """One caller (a token's subject) already has its whole share of the gateway's queue
    waiting: a per-client limit, so that one client's flood does not starve the others."""

    grpc_code = "RESOURCE_EXHAUSTED"
    graphql_code = "TOO_MANY_REQUESTS"
    http_status = 429


class DeadlineExceeded(RequestError):
    """The request's timeout expired before it finished."""

    grpc_code = "DEADLINE_EXCEEDED"
    graphql_code = "TIMEOUT"
    http_status = 504


class UnavailableError(RequestError):
    """The gateway or an executor could not be reached."""

    grpc_code = "UNAVAILABLE"
    graphql_code = "UNAVAILABLE"
    http_status = 503


class UnauthenticatedError(RequestError):
    """The request carries no token, or one the gateway refuses (bad signature, expired...)."""

    grpc_code = "UNAUTHENTICATED"
    graphql_code = "UNAUTHENTICATED"
    http_status = 401


class UnverifiedIdentityError(UnauthenticatedError):
    """An executor refused a request whose identity carries no valid voucher of the gateway
    (no signature, a wrong or expired one, another request's): only the gateway says who
    the caller is."""

    grpc_code = "UNAUTHENTICATED"
    graphql_code = "UNAUTHENTICATED"
    http_status = 401


class ForbiddenError(RequestError):
    """The token is valid but lacks the scope the endpoint (or operation) needs."""

    grpc_code = "PERMISSION_DENIED"
    graphql_code = "FORBIDDEN"
    http_status = 403

    def __init__(self, message: str, *, scope: str | None = None) -> None:
        self.scope = scope
        """The scope that was missing, when one was."""
        super().__init__(message)

    def extensions(self) -> dict[str, object]:
        if not self.scope:
            return super().extensions()
        return {**super().extensions(), "scope": self.scope}


def request_errors() -> tuple[type[RequestError], ...]:
    """Every :class:`RequestError` of this module, each parent before its subclasses."""
    found: list[type[RequestError]] = []

    def walk(cls: type[RequestError]) -> None:
        if cls.__module__ == __name__:  # not a user's subclass
            found.append(cls)
            for sub in cls.__subclasses__():
                walk(sub)

    walk(RequestError)
    return tuple(found)


def for_grpc_code(
    name: str, among: tuple[type[RequestError], ...] | None = None
) -> type[RequestError]:
    """The most general error (of ``among``, by default every request error) whose
    ``grpc_code`` is ``name``; :class:`RequestError` when none has it."""
    for cls in among if among is not None else request_errors():
        if cls.grpc_code == name:
            return cls
    return RequestError


def for_graphql_code(code: str) -> type[RequestError] | None:
    """The most general request error whose ``graphql_code`` is ``code``, if one has it."""
    for cls in request_errors():
        if cls.graphql_code == code:
            return cls
    return None


REFUSALS: tuple[type[RequestError], ...] = (
    BadRequestError,
    TooManyDocumentsError,
    OverloadedError,
    ShareExceededError,
    DeadlineExceeded,
    UnavailableError,
    UnauthenticatedError,
    ForbiddenError,
)
"""The failures the gateway itself answers (not an executor's): clients map a status back
onto these by class name (a stream's answer) or by ``graphql_code``."""
