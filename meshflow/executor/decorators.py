"""The ``@requests`` decorator that turns Executor methods into endpoints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar, overload

from meshflow.types import DEFAULT_ENDPOINT

F = TypeVar("F", bound=Callable[..., Any])

ENDPOINTS_ATTR = "__meshflow_endpoints__"
READ_ONLY_ATTR = "__meshflow_read_only__"


def _normalise(on: str) -> str:
    if not isinstance(on, str) or not on:
        raise TypeError(f"@requests(on=...) takes endpoint names such as '/index', got {on!r}")
    return on if on.startswith("/") else "/" + on


@overload
def requests(func: F) -> F: ...


@overload
def requests(
    *, on: str | Sequence[str] | None = None, read_only: bool = False
) -> Callable[[F], F]: ...


def requests(
    func: F | None = None, *, on: str | Sequence[str] | None = None, read_only: bool = False
) -> F | Callable[[F], F]:
    """Bind an Executor method to one or more endpoints.

    A bare ``@requests`` binds the method to every endpoint that no other method claims;
    ``@requests(on='/index')`` or ``@requests(on=['/index', '/update'])`` binds it to those.
    The method may be sync or async and receives ``docs``, ``parameters`` and ``**kwargs``::

        class Indexer(Executor):
            @requests(on='/index')
            async def index(self, docs, parameters, **kwargs):
                ...

            @requests(on='/search', read_only=True)
            def search(self, docs, parameters: SearchParams, **kwargs):
                ...

    ``read_only=True`` declares that the endpoint changes nothing: the GraphQL door offers it
    as a query field (``query { search(...) }``). A dataclass annotated on ``parameters``
    makes typed parameters (see :mod:`meshflow.executor.parameters`).
    """
    if on is None:
        names = [DEFAULT_ENDPOINT]
    elif isinstance(on, str):
        names = [_normalise(on)]
    else:
        names = [_normalise(n) for n in on]
        if not names:
            raise TypeError("@requests(on=[]) binds no endpoint; name at least one")

    def mark(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@requests decorates methods, got {fn!r}")
        existing: list[str] = list(getattr(fn, ENDPOINTS_ATTR, []))
        setattr(fn, ENDPOINTS_ATTR, existing + [n for n in names if n not in existing])
        if read_only:
            marked: list[str] = list(getattr(fn, READ_ONLY_ATTR, []))
            setattr(fn, READ_ONLY_ATTR, marked + names)
        return fn

    if func is not None:
        return mark(func)
    return mark
