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
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Status, StatusCode

from meshflow.document import DocumentArray
from meshflow.errors import DeadlineExceeded
from meshflow.spec.batching import DynamicBatching

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext, Tracer

log = logging.getLogger("meshflow.executor")

Call = Callable[[DocumentArray, dict[str, Any]], Awaitable[tuple[Any, float, float]]]
"""Runs the method on a batch's documents with the first request's arguments; returns its
result and when it started and ended (``time.perf_counter``), or raises :class:`CallFailed`
(any other exception fails the batch's requests too, its time unknown)."""
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


@dataclass
class Timing:
    """Where one request's time went, filled in whatever became of it: the runtime's metrics
    need it for requests that fail or expire too, which get an error, not a :class:`Served`."""

    waited: float | None = None
    """Seconds in the queue: until its batch was taken, or until it left (deadline, cancel)."""
    started: float | None = None
    """When its batch's call started and ended (``time.perf_counter``); None if it never ran."""
    ended: float | None = None


class CallFailed(Exception):
    """Raised by a :data:`Call` whose method raised, with the method's error and when the call
    started and ended (the metrics of a failed request). It never leaves the batcher: the
    batch's requests get :attr:`error`, the method's own."""

    def __init__(self, error: Exception, started: float, ended: float) -> None:
        super().__init__(f"the batched call failed: {type(error).__name__}: {error}")
        self.error = error
        self.started = started
        self.ended = ended


@dataclass(eq=False)
class _Waiting:
    docs: DocumentArray
    size: int
    key: Hashable
    kwargs: dict[str, Any]
    future: asyncio.Future[Served]
    enqueued: float
    deadline: float | None
    span: SpanContext | None
    timing: Timing
    queued: bool = False
    """Counted in its queue; False once taken or gone (it may still sit in the deque, behind
    the head, until it reaches the head: removing it from the middle would cost O(n))."""


class _Queue:
    """The requests of one key, in arrival order, and their documents' count, kept up to date
    as they come and go so that no dispatch ever walks a queue. Its head is always queued."""

    __slots__ = ("aged", "docs", "entries", "filled", "key")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.entries: deque[_Waiting] = deque()
        self.docs = 0
        # The head last pushed on the batcher's age heap, and on its heap of full queues.
        self.aged: _Waiting | None = None
        self.filled: _Waiting | None = None


_Heap = list[tuple[float, int, _Waiting]]
"""Heads of queues by arrival time (then push order); entries whose queue has another head
since are stale and dropped when they reach the top."""


class CallCost:
    """Measured cost of the endpoint's calls: ``seconds ~ fixed + per_doc * docs`` (a least
    squares fit that forgets slowly), and the mean gap between arrivals.

    :meth:`idle_hold` is how long a request that finds the endpoint idle may wait for
    company: the expected gap to the next arrival, but only when that gap is shorter than the
    fixed cost a shared call saves, and the request itself came that soon after the one
    before; otherwise (a lone client, or calls whose cost is all per document, or too few
    measurements) zero.
    """

    DECAY = 0.95

    def __init__(self) -> None:
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._gap: float | None = None
        self._latest: float | None = None
        self._last: float | None = None

    def arrived(self, now: float) -> None:
        if self._last is not None:
            gap = now - self._last
            self._latest = gap
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
        # The mean moves a tenth per arrival, so after a burst it stays far below the gaps
        # of the lone client that follows for many requests. But a client that waits for
        # its answers arrives at most once per call, and a call costs at least ``fixed``: a
        # request that came that late after the one before has nobody behind it to wait for.
        if self._latest is not None and self._latest >= fixed:
            return 0.0
        return self._gap


class Batcher:
    """Gathers the requests of one endpoint and runs them in batches through ``call``.

    Args:
        options: the endpoint's :class:`DynamicBatching`.
        call: runs the method (see :data:`Call`); raises :class:`CallFailed` when the method
            raised, to tell when it ran.
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
        self._queues: dict[Hashable, _Queue] = {}
        # Every queue's head by age, and the full queues' heads: a dispatch looks at the top
        # of each instead of at every queue (thousands with per-request parameters).
        self._by_age: _Heap = []
        self._full: _Heap = []
        self._pushes = itertools.count()
        self._waiting = 0
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Requests in the queues now."""
        return self._waiting

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
        timing: Timing | None = None,
    ) -> Served:
        """Queue one request and return what its batch did for it (or raise what the batch's
        method raised; :class:`DeadlineExceeded` when ``time_remaining`` seconds pass while it
        waits). ``timing``, if given, is filled in whatever the outcome."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if time_remaining is not None and time_remaining <= 0:
            if timing is not None:
                timing.waited = 0.0
            raise self._expired()
        entry = _Waiting(
            docs=docs,
            size=len(docs),
            key=key,
            kwargs=kwargs,
            future=loop.create_future(),
            enqueued=now,
            deadline=now + time_remaining if time_remaining is not None else None,
            span=span,
            timing=timing if timing is not None else Timing(),
        )
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key)
        queue.entries.append(entry)
        queue.docs += entry.size
        entry.queued = True
        self._waiting += 1
        self._settle(queue)
        self.cost.arrived(now)
        self._dispatch()
        try:
            if time_remaining is None:
                return await entry.future
            # Only this wait is the deadline's: a TimeoutError the method raised reaches the
            # caller through the future, as the method's own error.
            done, _ = await asyncio.wait((entry.future,), timeout=time_remaining)
            if not done:
                raise self._expired()
            return entry.future.result()
        finally:
            if not entry.future.done():
                entry.future.cancel()  # a batch that took it already drops its answer
            elif not entry.future.cancelled():
                # Answered with an error as this request was cancelled: nobody is left to
                # read it (else asyncio logs "Future exception was never retrieved").
                entry.future.exception()
            if entry.future.cancelled():
                self._leave(entry)

    def _expired(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"executor {self._deployment!r}, endpoint {self._endpoint}: the request's deadline "
            "passed while it waited for its batch"
        )

    def _leave(self, entry: _Waiting) -> None:
        if not entry.queued:
            return
        queue = self._queues[entry.key]
        entry.timing.waited = asyncio.get_running_loop().time() - entry.enqueued
        self._unqueue(queue, entry)
        self._settle(queue)
        self._dispatch()

    # -- forming batches --------------------------------------------------------------------

    def _unqueue(self, queue: _Queue, entry: _Waiting) -> None:
        entry.queued = False
        queue.docs -= entry.size
        self._waiting -= 1

    def _settle(self, queue: _Queue) -> None:
        """After ``queue`` changed: drop the requests that left off its head, forget it if
        empty, and put a new head, or a queue that just filled, on the heaps."""
        entries = queue.entries
        while entries and not entries[0].queued:
            entries.popleft()
        if not entries:
            if self._queues.get(queue.key) is queue:
                del self._queues[queue.key]
            return
        head = entries[0]
        if queue.aged is not head:
            queue.aged = head
            heapq.heappush(self._by_age, (head.enqueued, next(self._pushes), head))
        if queue.docs >= self.options.preferred_batch_size and queue.filled is not head:
            queue.filled = head
            heapq.heappush(self._full, (head.enqueued, next(self._pushes), head))
        # Stale entries leave when they reach the top, but behind a head that waits long
        # (a fixed timeout), a busy queue's could pile up: rebuild, rarely enough to be O(1)
        # per push.
        if len(self._by_age) + len(self._full) > 4 * len(self._queues) + 64:
            self._rebuild_heaps()

    def _rebuild_heaps(self) -> None:
        preferred = self.options.preferred_batch_size
        self._by_age, self._full = [], []
        for queue in self._queues.values():
            head = queue.entries[0]
            queue.aged = head
            self._by_age.append((head.enqueued, next(self._pushes), head))
            queue.filled = head if queue.docs >= preferred else None
            if queue.filled is not None:
                self._full.append((head.enqueued, next(self._pushes), head))
        heapq.heapify(self._by_age)
        heapq.heapify(self._full)

    def _top(self, heap: _Heap, *, full: bool) -> _Queue | None:
        """The queue with the oldest head on ``heap`` (stale entries go on the way)."""
        while heap:
            head = heap[0][2]
            queue = self._queues.get(head.key)
            if queue is not None and queue.entries[0] is head:
                if not full or queue.docs >= self.options.preferred_batch_size:
                    return queue
                queue.filled = None  # no longer full (a request left): pushed again if it fills
            heapq.heappop(heap)
        return None

    def _ready_at(self, queue: _Queue) -> float:
        """When ``queue`` may go as a batch (loop time; 0: now)."""
        if queue.docs >= self.options.preferred_batch_size:
            return 0.0
        head = queue.entries[0].enqueued
        if self._timeout is not None:
            return head + self._timeout
        return head + self.cost.idle_hold() if self._running == 0 else 0.0

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running < self._limit and self._queues:
            now = loop.time()
            # Every queue's wait (timeout or hold) is the same length, so if the oldest one
            # may not go yet, no queue may but a full one: the oldest full one goes. While
            # every call slot is busy only a full batch may go ahead.
            chosen = None
            if self._running < self._concurrency:
                oldest = self._top(self._by_age, full=False)
                if oldest is not None and self._ready_at(oldest) <= now:
                    chosen = oldest
            if chosen is None:
                chosen = self._top(self._full, full=True)
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

    def _take(self, queue: _Queue, now: float) -> list[_Waiting]:
        entries = queue.entries
        batch: list[_Waiting] = []
        docs = 0
        preferred = self.options.preferred_batch_size
        while entries:
            entry = entries[0]
            if not entry.queued:
                entries.popleft()
                continue
            if entry.future.done():  # cancelled: its submit has not resumed to leave yet
                self._unqueue(queue, entry)
                entries.popleft()
                continue
            if entry.deadline is not None and entry.deadline <= now:
                self._unqueue(queue, entry)
                entries.popleft()
                entry.timing.waited = now - entry.enqueued
                entry.future.set_exception(self._expired())
                continue
            if batch and docs + entry.size > preferred:
                break
            self._unqueue(queue, entry)
            entries.popleft()
            entry.timing.waited = now - entry.enqueued
            batch.append(entry)
            docs += entry.size
            if docs >= preferred:
                break
        self._settle(queue)
        return batch

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        # After a dispatch with a free call slot no queue is full: the oldest is due first.
        when = None
        if self._running < self._concurrency:
            oldest = self._top(self._by_age, full=False)
            if oldest is not None:
                when = self._ready_at(oldest)
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
        returned = False  # the method returned: its time is a measure of the endpoint's cost
        stopped = False
        try:
            try:
                spans = [e.span for e in batch if e.span is not None]
                if self._tracer is not None and spans:
                    result, started, ended = await self._traced(merged, batch, spans)
                else:
                    result, started, ended = await self._call(merged, batch[0].kwargs)
                returned = True
                parts = self._split(result, merged, batch)
            except CallFailed as failed:
                error, started, ended = failed.error, failed.started, failed.ended
            except Exception as exc:
                error = exc
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    stopped = True  # close(): the executor stops
                    raise
                # The method let out the cancellation of something it awaited; left to
                # propagate, it would end this task with the requests never answered.
                error = RuntimeError(
                    f"batched endpoint {self._endpoint} of {self._deployment!r} raised "
                    "asyncio.CancelledError (a task or future it awaited was cancelled); "
                    "catch it in the method, or raise another error"
                )
        finally:
            self._running -= 1
            if returned:
                self.cost.observe(total, ended - started)
            if self._on_batch is not None:
                self._on_batch(total, len(batch))
            # The next batch is taken before this one's requests resume: its call starts
            # (the loop runs tasks in the order they were woken) while they write their
            # answers, so the method does not wait for them.
            self._dispatch()
            for i, entry in enumerate(batch):
                entry.timing.started, entry.timing.ended = started, ended
                if entry.future.done():
                    continue
                if stopped:
                    entry.future.cancel()
                elif error is not None:
                    entry.future.set_exception(error)
                else:
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
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return await self._call(merged, batch[0].kwargs)
            except Exception as exc:
                # The method's own error, not the wrapper that carries its call's timing.
                error = exc.error if isinstance(exc, CallFailed) else exc
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                raise

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
