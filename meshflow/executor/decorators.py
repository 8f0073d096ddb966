"""The ``@requests`` decorator that turns Executor methods into endpoints."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

from meshflow.executor.doctypes import check_doc_type
from meshflow.spec.batching import AUTO, DynamicBatching
from meshflow.types import DEFAULT_ENDPOINT, REDUCE_RULES

F = TypeVar("F", bound=Callable[..., Any])

ENDPOINTS_ATTR = "__meshflow_endpoints__"
READ_ONLY_ATTR = "__meshflow_read_only__"
REDUCE_ATTR = "__meshflow_reduce__"
BATCHING_ATTR = "__meshflow_batching__"
DOC_TYPES_ATTR = "__meshflow_doc_types__"
IN_THREAD_ATTR = "__meshflow_in_thread__"


def _normalise(on: str) -> str:
    if not isinstance(on, str) or not on:
        raise TypeError(f"@requests(on=...) takes endpoint names such as '/index', got {on!r}")
    return on if on.startswith("/") else "/" + on


def _check_reduce(reduce: Mapping[str, str] | None) -> dict[str, str]:
    if reduce is None:
        return {}
    if not isinstance(reduce, Mapping):
        raise TypeError(
            f"@requests(reduce=...) takes a mapping of results key to rule, got {reduce!r}"
        )
    rules = {}
    for key, rule in reduce.items():
        if not isinstance(key, str) or rule not in REDUCE_RULES:
            raise TypeError(
                f"@requests(reduce=...): {key!r}: {rule!r} is not a rule; a results key (str) "
                f"takes one of {', '.join(REDUCE_RULES)}"
            )
        rules[key] = str(rule)
    return rules


@overload
def requests(func: F) -> F: ...


@overload
def requests(
    *,
    on: str | Sequence[str] | None = None,
    read_only: bool = False,
    reduce: Mapping[str, str] | None = None,
    doc: type | None = None,
    returns: type | None = None,
    in_thread: bool = False,
) -> Callable[[F], F]: ...


def requests(
    func: F | None = None,
    *,
    on: str | Sequence[str] | None = None,
    read_only: bool = False,
    reduce: Mapping[str, str] | None = None,
    doc: type | None = None,
    returns: type | None = None,
    in_thread: bool = False,
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

    ``reduce`` says how the gateway combines the results dicts of several shards (polling
    ``ALL`` or ``ID``) key by key: ``'sum'``, ``'min'``, ``'max'``, ``'first'``, ``'last'``,
    ``'concat'`` (lists) or ``'merge'`` (dicts); a key without a rule keeps the last shard's
    value::

            @requests(on='/count', read_only=True, reduce={'count': 'sum'})
            def count(self, **kwargs):
                return {'count': len(self.store)}

    ``doc`` and ``returns`` are dataclasses that type the documents the endpoint takes and
    answers with (see :mod:`meshflow.executor.doctypes`): the gateway builds named GraphQL
    types from them and checks inputs before any executor runs::

            @requests(on='/search', read_only=True, doc=ProductQuery, returns=Look)
            def search(self, docs, parameters: SearchParams, **kwargs):
                ...

    A sync method's first call runs in the executor's worker threads (it pays the one-time
    costs); later calls run on the executor's event loop while they stay short (under 2 ms
    each: handing a call to a thread costs more than that saves), and in the worker threads
    for good once they compute or block for longer (two calls within 100, or one past 20 ms).
    ``in_thread=True`` sends every call to the worker threads: for a method that may block
    now and then (network or disk I/O, a lock) or that needs the same thread every time::

            @requests(on='/fetch', in_thread=True)
            def fetch(self, docs, **kwargs):
                for doc in docs:
                    doc.text = urllib.request.urlopen(doc.uri, timeout=5).read().decode()
    """
    rules = _check_reduce(reduce)
    typed = {
        key: check_doc_type(cls, what=f"@requests({key}=...)")
        for key, cls in (("doc", doc), ("returns", returns))
        if cls is not None
    }
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
        if in_thread and inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"@requests(in_thread=True) on {getattr(fn, '__qualname__', fn)!r}: an async "
                "method runs on the event loop; in_thread is for sync methods"
            )
        existing: list[str] = list(getattr(fn, ENDPOINTS_ATTR, []))
        setattr(fn, ENDPOINTS_ATTR, existing + [n for n in names if n not in existing])
        if read_only:
            marked: list[str] = list(getattr(fn, READ_ONLY_ATTR, []))
            setattr(fn, READ_ONLY_ATTR, marked + names)
        if in_thread:
            threaded: list[str] = list(getattr(fn, IN_THREAD_ATTR, []))
            setattr(fn, IN_THREAD_ATTR, threaded + names)
        if rules:
            declared: dict[str, dict[str, str]] = dict(getattr(fn, REDUCE_ATTR, {}))
            declared.update(dict.fromkeys(names, rules))
            setattr(fn, REDUCE_ATTR, declared)
        if typed:
            doc_types: dict[str, dict[str, type]] = dict(getattr(fn, DOC_TYPES_ATTR, {}))
            doc_types.update(dict.fromkeys(names, typed))
            setattr(fn, DOC_TYPES_ATTR, doc_types)
        return fn

    if func is not None:
        return mark(func)
    return mark


def dynamic_batching(
    *, preferred_batch_size: int = 16, timeout: float | Literal["auto"] = AUTO
) -> Callable[[F], F]:
    """Let concurrent requests to this endpoint share one call of the method (per replica).

    The runtime gathers the documents of requests that arrive together, calls the method once
    with one DocumentArray, and answers each request with exactly its own documents, in its
    order. ``timeout`` is the most milliseconds the first waiting request waits for
    ``preferred_batch_size`` documents (Jina's meaning); ``'auto'`` (the default) waits only
    while a call of the endpoint is running, so a lone request never waits::

        class Encoder(Executor):
            @requests(on='/encode')
            @dynamic_batching(preferred_batch_size=32, timeout='auto')
            def encode(self, docs, **kwargs):
                docs.embeddings = self.model.encode(docs.texts)

    Requests with different ``parameters`` (or, for methods that take ``auth``, different
    callers) are never merged; a request with more documents than ``preferred_batch_size``
    runs alone. The method must change the documents in place or return as many documents
    as it got, in the same order; a returned dict goes to every request of the batch. A
    Flow's ``uses_dynamic_batching`` overrides this per deployment. See ``docs/batching.md``.
    """
    options = DynamicBatching(
        preferred_batch_size=preferred_batch_size,
        timeout=timeout,
    )

    def mark(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@dynamic_batching decorates methods, got {fn!r}")
        setattr(fn, BATCHING_ATTR, options)
        return fn

    return mark
