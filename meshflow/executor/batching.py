"""The dynamic batcher of one endpoint of one replica: concurrent requests, one method call.

Requests wait in a queue per key (the endpoint called, the parameters and, for methods that
take ``auth``, the caller), so that requests which would see different arguments are never
merged. A queue's waiting requests go as one batch when

- they hold ``preferred_batch_size`` documents, or
- with a fixed ``timeout``: the first of them has waited ``timeout`` ms, or
- with ``timeout='auto'``: a call slot is free (no call of the endpoint runs, or fewer than
  the executor's worker threads). While calls run, requests gather and go together when one
  ends ("batch while busy"). A lone request waits only when the measured cost says that the
  next one is due sooner than the fixed cost of a call it would save (see :class:`CallCost`).

A batch takes the queue's requests in arrival order, up to ``preferred_batch_size`` documents;
a request with more runs alone. A request cancelled, or whose deadline passes, while waiting
leaves the queue and is not run.

For a sync method (``ahead``), a *full* batch is also taken while every worker thread is busy,
and handed to the thread pool, where it waits for the call before it: the worker that ends a
call goes straight on to the next, holding the GIL it already has. Otherwise the next call
could start only after the event loop thread let go of the GIL, and that thread is then busy
answering the requests of the batch that just ended (2-3 ms for 16 answers, 10% of a 24 ms
call of the app's TextEncoder).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan

from meshflow.document import DocumentArray
from meshflow.errors import DeadlineExceeded
from meshflow.spec.batching import DynamicBatching

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext, Tracer

log = logging.getLogger("meshflow.executor")

Call = Callable[[DocumentArray, dict[str, Any]], Awaitable[tuple[Any, float, float]]]
"""Runs the method on a batch's documents with the first request's arguments; returns its
result and when it started and ended (``time.perf_counter``)."""
OnBatch = Callable[[int, int], None]
"""Told the documents and the requests of each batch that ran."""


@dataclass(frozen=True)
class Served:
    """What the batch call did for one request."""

    docs: DocumentArray
    """This request's documents after the call, in its order."""
    result: Any
    """The method's dict, or :attr:`docs`."""
    waited: float
    """Seconds in the queue, until the batch was taken."""
    started: float
    ended: float
    batch_docs: int
    batch_requests: int


@dataclass(eq=False)
class _Waiting:
    docs: DocumentArray
    key: Hashable
    kwargs: dict[str, Any]
    future: asyncio.Future[Served]
    enqueued: float
    deadline: float | None
    span: SpanContext | None


class CallCost:
    """Measured cost of the endpoint's calls: ``seconds ~ fixed + per_doc * docs`` (a least
    squares fit that forgets slowly), and the mean gap between arrivals.

    :meth:`idle_hold` is how long a request that finds the endpoint idle may wait for
    company: the expected gap to the next arrival, but only when that gap is shorter than the
    fixed cost a shared call saves; otherwise (a lone client, or calls whose cost is all per
    document, or too few measurements) zero.
    """

    DECAY = 0.95

    def __init__(self) -> None:
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._gap: float | None = None
        self._last: float | None = None

    def arrived(self, now: float) -> None:
        if self._last is not None:
            gap = now - self._last
            self._gap = gap if self._gap is None else 0.9 * self._gap + 0.1 * gap
        self._last = now

    def observe(self, docs: int, seconds: float) -> None:
        d = self.DECAY
        self._w = d * self._w + 1.0
        self._x = d * self._x + docs
        self._y = d * self._y + seconds
        self._xx = d * self._xx + docs * docs
        self._xy = d * self._xy + docs * seconds

    @property
    def fixed(self) -> float:
        """Seconds a call costs whatever its size (0 until batches of several sizes ran)."""
        if self._w < 3:
            return 0.0
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var = self._xx / self._w - mean_x * mean_x
        if var < 0.25:  # all batches (nearly) the same size: the intercept is unknown
            return 0.0
        slope = (self._xy / self._w - mean_x * mean_y) / var
        return max(0.0, mean_y - max(slope, 0.0) * mean_x)

    def idle_hold(self) -> float:
        fixed = self.fixed
        if self._gap is None or fixed <= 0.0 or self._gap >= fixed:
            return 0.0
        return self._gap


class Batcher:
    """Gathers the requests of one endpoint and runs them in batches through ``call``.

    Args:
        options: the endpoint's :class:`DynamicBatching`.
        call: runs the method (see :data:`Call`).
        concurrency: batch calls of this endpoint at once (the executor's worker threads for
            a sync method, 1 for an async one).
        ahead: take one more full batch while ``concurrency`` calls run (a sync method's
            thread pool queues it for the next free worker).
        name: the deployment, endpoint: for messages and spans.
    """

    def __init__(
        self,
        options: DynamicBatching,
        call: Call,
        *,
        concurrency: int = 1,
        ahead: bool = False,
        deployment: str = "",
        endpoint: str = "",
        tracer: Tracer | None = None,
        on_batch: OnBatch | None = None,
    ) -> None:
        self.options = options
        self.cost = CallCost()
        self._call = call
        self._concurrency = max(1, concurrency)
        self._limit = self._concurrency + (1 if ahead else 0)
        self._deployment = deployment
        self._endpoint = endpoint
        self._tracer = tracer
        self._on_batch = on_batch
        self._timeout = None if options.adaptive else float(options.timeout) / 1e3
        self._queues: dict[Hashable, deque[_Waiting]] = {}
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Requests in the queues now."""
        return sum(len(q) for q in self._queues.values())

    @property
    def running(self) -> int:
        """Batch calls running now."""
        return self._running

    async def submit(
        self,
        docs: DocumentArray,
        *,
        key: Hashable,
        kwargs: dict[str, Any],
        time_remaining: float | None = None,
        span: SpanContext | None = None,
    ) -> Served:
        """Queue one request and return what its batch did for it (or raise what the batch
        raised; :class:`DeadlineExceeded` when ``time_remaining`` seconds pass first)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if time_remaining is not None and time_remaining <= 0:
            raise self._expired()
        entry = _Waiting(
            docs=docs,
            key=key,
            kwargs=kwargs,
            future=loop.create_future(),
            enqueued=now,
            deadline=now + time_remaining if time_remaining is not None else None,
            span=span,
        )
        self._queues.setdefault(key, deque()).append(entry)
        self.cost.arrived(now)
        self._dispatch()
        try:
            if time_remaining is None:
                return await entry.future
            return await asyncio.wait_for(entry.future, time_remaining)
        except TimeoutError:
            raise self._expired() from None
        finally:
            if not entry.future.done() or entry.future.cancelled():
                self._leave(entry)

    def _expired(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"executor {self._deployment!r}, endpoint {self._endpoint}: the request's deadline "
            "passed while it waited for its batch"
        )

    def _leave(self, entry: _Waiting) -> None:
        queue = self._queues.get(entry.key)
        if queue is not None and entry in queue:
            queue.remove(entry)
            if not queue:
                del self._queues[entry.key]
            self._dispatch()

    # -- forming batches --------------------------------------------------------------------

    def _full(self, queue: deque[_Waiting]) -> bool:
        return sum(len(e.docs) for e in queue) >= self.options.preferred_batch_size

    def _ready_at(self, queue: deque[_Waiting]) -> float:
        """When ``queue`` may go as a batch (loop time; 0: now)."""
        if self._full(queue):
            return 0.0
        head = queue[0].enqueued
        if self._timeout is not None:
            return head + self._timeout
        return head + self.cost.idle_hold() if self._running == 0 else 0.0

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running < self._limit and self._queues:
            now = loop.time()
            busy = self._running >= self._concurrency  # only a full batch may go ahead
            chosen = None
            for key, queue in self._queues.items():  # oldest queues first
                ready = self._full(queue) if busy else self._ready_at(queue) <= now
                if ready and (
                    chosen is None or queue[0].enqueued < self._queues[chosen][0].enqueued
                ):
                    chosen = key
            if chosen is None:
                break
            batch = self._take(chosen, now)
            if batch:
                self._running += 1
                # A fresh context: the batch belongs to none of its requests' traces.
                task = loop.create_task(self._run(batch, now), context=contextvars.Context())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self._arm_timer(loop)

    def _take(self, key: Hashable, now: float) -> list[_Waiting]:
        queue = self._queues[key]
        batch: list[_Waiting] = []
        docs = 0
        preferred = self.options.preferred_batch_size
        while queue:
            entry = queue[0]
            if entry.future.done():
                queue.popleft()
                continue
            if entry.deadline is not None and entry.deadline <= now:
                queue.popleft()
                entry.future.set_exception(self._expired())
                continue
            if batch and docs + len(entry.docs) > preferred:
                break
            queue.popleft()
            batch.append(entry)
            docs += len(entry.docs)
            if docs >= preferred:
                break
        if not queue:
            del self._queues[key]
        return batch

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        when = None
        if self._running < self._concurrency:
            for queue in self._queues.values():
                at = self._ready_at(queue)
                when = at if when is None else min(when, at)
        if self._timer is not None and (when is None or when != self._timer_at):
            self._timer.cancel()
            self._timer = None
        if when is not None and self._timer is None:
            self._timer_at = when
            self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    # -- running them -----------------------------------------------------------------------

    async def _run(self, batch: list[_Waiting], taken: float) -> None:
        merged = DocumentArray([doc for entry in batch for doc in entry.docs])
        total = len(merged)
        started = ended = time.perf_counter()
        result: Any = None
        parts: list[DocumentArray] = []
        error: Exception | None = None
        try:
            spans = [e.span for e in batch if e.span is not None]
            if self._tracer is not None and spans:
                result, started, ended = await self._traced(merged, batch, spans)
            else:
                result, started, ended = await self._call(merged, batch[0].kwargs)
            parts = self._split(result, merged, batch)
        except Exception as exc:
            error = exc
        finally:
            self._running -= 1
            self.cost.observe(total, ended - started)
            if self._on_batch is not None:
                self._on_batch(total, len(batch))
            # The next batch is taken before this one's requests resume: its call starts
            # (the loop runs tasks in the order they were woken) while they write their
            # answers, so the method does not wait for them.
            self._dispatch()
        for i, entry in enumerate(batch):
            if entry.future.done():
                continue
            if error is not None:
                entry.future.set_exception(error)
                continue
            entry.future.set_result(
                Served(
                    docs=parts[i],
                    result=result if isinstance(result, dict) else parts[i],
                    waited=taken - entry.enqueued,
                    started=started,
                    ended=ended,
                    batch_docs=total,
                    batch_requests=len(batch),
                )
            )

    async def _traced(
        self, merged: DocumentArray, batch: list[_Waiting], spans: list[SpanContext]
    ) -> tuple[Any, float, float]:
        """The call in one span, a child of the first traced request's span and linked to
        every traced request's span."""
        assert self._tracer is not None
        parent = trace.set_span_in_context(NonRecordingSpan(spans[0]))
        attributes: dict[str, str | int] = {
            "meshflow.deployment": self._deployment,
            "meshflow.endpoint": self._endpoint,
            "meshflow.batch.docs": len(merged),
            "meshflow.batch.requests": len(batch),
        }
        with self._tracer.start_as_current_span(
            f"{self._deployment} {self._endpoint} batch",
            context=parent,
            links=[Link(s) for s in spans],
            attributes=attributes,
        ):
            return await self._call(merged, batch[0].kwargs)

    def _split(
        self, result: Any, merged: DocumentArray, batch: list[_Waiting]
    ) -> list[DocumentArray]:
        """Each request's own documents out of the batch's answer, in its order."""
        if result is None or isinstance(result, dict):
            out = merged
        elif isinstance(result, DocumentArray):
            out = result
        elif isinstance(result, list | tuple):
            out = DocumentArray(result)
        else:
            raise TypeError(
                f"endpoint {self._endpoint} returned {type(result).__name__}; return None "
                "(docs changed in place), a DocumentArray or a dict"
            )
        if len(out) != len(merged):
            raise ValueError(
                f"batched endpoint {self._endpoint} of {self._deployment!r} returned "
                f"{len(out)} documents for {len(merged)}; with dynamic batching a method must "
                "answer every document it got, in order (change them in place)"
            )
        parts = []
        offset = 0
        for entry in batch:
            parts.append(out[offset : offset + len(entry.docs)])
            offset += len(entry.docs)
        return parts

    def close(self) -> None:
        """Cancel the batches still running (the executor stops)."""
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
