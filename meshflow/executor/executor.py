"""The Executor base class: product logic in ``@requests`` methods."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from meshflow.errors import ConfigError
from meshflow.executor.decorators import (
    BATCHING_ATTR,
    DOC_TYPES_ATTR,
    ENDPOINTS_ATTR,
    IN_THREAD_ATTR,
    READ_ONLY_ATTR,
    REDUCE_ATTR,
)
from meshflow.executor.parameters import params_type
from meshflow.spec.batching import DynamicBatching
from meshflow.types import StateScope

STATE_SCOPES: tuple[StateScope, ...] = ("none", "workspace", "process")

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


@dataclass(frozen=True)
class RuntimeArgs:
    """Where an Executor instance runs: its deployment name, replica and shard."""

    name: str
    replica_id: int = 0
    shard_id: int = 0
    replicas: int = 1
    shards: int = 1
    workspace_root: str = "workspace"


@dataclass(frozen=True)
class EndpointMethod:
    """One endpoint of an Executor class: the method and how to call it."""

    name: str
    method: str
    is_async: bool
    accepts: frozenset[str] | None
    """Keyword names the method takes; None when it takes ``**kwargs``."""
    read_only: bool = False
    params: type | None = None
    """A dataclass the request's parameters are turned into, if the method declares one."""
    reduce: Mapping[str, str] = field(default_factory=dict)
    """How several shards' results combine, per results key (``@requests(reduce=...)``)."""
    batching: DynamicBatching | None = None
    """``@dynamic_batching`` of the method, if it has one."""
    doc: type | None = None
    """The dataclass typing the documents it takes (``@requests(doc=...)``), if any."""
    returns: type | None = None
    """The dataclass typing the documents it answers with (``@requests(returns=...)``)."""
    in_thread: bool = False
    """``@requests(in_thread=True)``: a sync method whose calls always go to the worker
    threads, never onto the event loop."""


class Executor:
    """Base class of all Executors.

    Subclass it and mark methods with :func:`~meshflow.requests`. Constructor arguments come
    from ``uses_with``; ``self.workspace`` is a directory of this executor (and shard) that
    survives restarts, and ``self.runtime_args`` tells the deployment name, replica and shard::

        class Upper(Executor):
            def __init__(self, suffix: str = '!', **kwargs):
                super().__init__(**kwargs)
                self.suffix = suffix

            @requests
            def upper(self, docs, **kwargs):
                for d in docs:
                    d.text = d.text.upper() + self.suffix
    """

    endpoints: ClassVar[dict[str, EndpointMethod]] = {}
    state_scope: ClassVar[StateScope] = "none"
    """Where this Executor keeps state that requests change:

    - ``'none'`` (default): nowhere; replicas are interchangeable.
    - ``'workspace'``: in ``self.workspace``, which the replicas of a shard share; the
      Executor itself makes each replica see the others' writes (as ``VectorIndexer`` does).
    - ``'process'``: in the process's memory; a deployment is refused with more than one
      replica per shard (use shards, with polling ``ID`` for writes, to scale it).
    """
    _runtime_args: RuntimeArgs

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.state_scope not in STATE_SCOPES:
            raise ConfigError(
                f"{cls.__qualname__}.state_scope is {cls.state_scope!r}; use one of "
                f"{', '.join(map(repr, STATE_SCOPES))}"
            )
        found: dict[str, EndpointMethod] = {}
        # Walk the MRO from the base up so that subclasses override their parents' bindings.
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                names = getattr(value, ENDPOINTS_ATTR, None)
                if not names or not callable(value):
                    continue
                spec = _describe(value)
                read_only = set(getattr(value, READ_ONLY_ATTR, ()))
                in_thread = set(getattr(value, IN_THREAD_ATTR, ()))
                typed = params_type(value)
                reduce = getattr(value, REDUCE_ATTR, {})
                batching = getattr(value, BATCHING_ATTR, None)
                doc_types = getattr(value, DOC_TYPES_ATTR, {})
                for endpoint in names:
                    typed_docs = doc_types.get(endpoint, {})
                    found[endpoint] = EndpointMethod(
                        endpoint,
                        attr,
                        *spec,
                        read_only=endpoint in read_only,
                        params=typed,
                        reduce=reduce.get(endpoint, {}),
                        batching=batching,
                        doc=typed_docs.get("doc"),
                        returns=typed_docs.get("returns"),
                        in_thread=endpoint in in_thread,
                    )
        cls.endpoints = found

    def __init__(self, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(
                f"{type(self).__name__} got unexpected uses_with argument(s) "
                f"{', '.join(sorted(kwargs))}; declare them in its __init__"
            )

    @property
    def runtime_args(self) -> RuntimeArgs:
        """Deployment name, replica id and shard id of this instance."""
        try:
            return self._runtime_args
        except AttributeError:
            self._runtime_args = RuntimeArgs(name=type(self).__name__)
            return self._runtime_args

    @property
    def tracer(self) -> Tracer:
        """An OpenTelemetry tracer: spans opened in an endpoint join the request's trace, as
        children of the endpoint's span (no-ops when the Flow does not trace)::

            with self.tracer.start_as_current_span('embed batch') as span:
                span.set_attribute('batch.size', len(docs))
        """
        tracer: Tracer | None = self.__dict__.get("_tracer")
        if tracer is None:
            # lazy: keeps `import meshflow` cheap: OpenTelemetry loads only for executors that trace
            from opentelemetry import trace

            tracer = trace.get_tracer(f"meshflow.executor.{self.runtime_args.name}")
            self.__dict__["_tracer"] = tracer
        return tracer

    @property
    def workspace(self) -> str:
        """A directory for this executor's state, created on first use.

        ``<flow workspace>/<deployment>`` or, when sharded, ``.../<deployment>/shard-<i>``.
        Replicas of one shard share it.
        """
        args = self.runtime_args
        path = os.path.join(os.path.abspath(args.workspace_root), args.name)
        if args.shards > 1:
            path = os.path.join(path, f"shard-{args.shard_id}")
        os.makedirs(path, exist_ok=True)
        return path


def check_replicas(cls: type[Executor], replicas: int, *, deployment: str) -> None:
    """Refuse several replicas of an Executor whose state lives in process memory.

    Raises :class:`ConfigError` naming the deployment and what to do instead.
    """
    if replicas > 1 and getattr(cls, "state_scope", "none") == "process":
        raise ConfigError(
            f"deployment {deployment!r}: {cls.__name__} keeps its state in process memory "
            f"(state_scope='process'), so {replicas} replicas would each hold only the writes "
            "they served and answer wrong; use replicas=1 and scale with shards (polling "
            "{'/index': 'ID', '/update': 'ID', '/delete': 'ID', '*': 'ALL'}), or keep the "
            "state in the workspace (state_scope='workspace')"
        )


def _describe(fn: Callable[..., Any]) -> tuple[bool, frozenset[str] | None]:
    is_async = inspect.iscoroutinefunction(fn)
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return is_async, None
    return is_async, frozenset(p.name for p in params)


def instantiate(cls: type[Executor], uses_with: dict[str, Any], args: RuntimeArgs) -> Executor:
    """Create an Executor with its runtime arguments set before its ``__init__`` runs."""
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise ConfigError(f"{cls!r} is not an Executor subclass; derive it from meshflow.Executor")
    obj = cls.__new__(cls)
    obj._runtime_args = args
    obj.__init__(**uses_with)  # type: ignore[misc]
    return obj
