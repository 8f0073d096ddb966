"""Admission: which requests the gateway runs now, which wait, and which it refuses at once.

One :class:`Admission` per gateway, shared by every door. A request takes a slot
(:meth:`Admission.acquire`, :meth:`Admission.release`) for as long as the gateway works on
it. When every slot is taken it waits in a queue; the next free slot goes to the waiting
caller (token subject; one caller without auth) with the fewest requests running, then the
one served longest ago (callers take turns), oldest request first. It is refused at once,
before any of its work is done, when

- the queue holds ``max_queue`` requests (:class:`~meshflow.errors.OverloadedError`),
- its caller already has its share of the queue waiting
  (:class:`~meshflow.errors.ShareExceededError`), or
- at the rate slots free up, it could not start before its deadline, or within
  ``max_queue_wait`` (:class:`~meshflow.errors.OverloadedError`);

and leaves the queue, refused, when that time passes while it waits. Every refusal carries a
``retry_after``: how long the requests already waiting take to start, with jitter, so that
refused clients do not come back together.

The number of slots adapts to measured latency (see
:class:`~meshflow.spec.admission.AdmissionPolicy` for the rule): under overload the requests
wait here, in order and fairly, instead of in the executors' queues, where every request
waits behind all the others and no deadline can be checked before work is spent.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from meshflow.errors import OverloadedError, ShareExceededError
from meshflow.gateway.pacing import Pacer
from meshflow.spec.admission import AdmissionPolicy

_PROBE_SAMPLES = 20
"""Latencies measured at ``min_in_flight`` that make the unloaded latency (their median)."""
_PROBE_LONGEST = 1.0
"""Seconds a probe lasts at most, however few requests finish in it."""
_MIN_SAMPLES = 5
"""Latencies an interval needs before the limit moves on them."""
_REFUSAL_SHARE = 0.1
"""Refused clients should come back at most at this share of the rate requests are served."""
_MAX_WAKES = 100_000
"""The most refused clients tracked (a heap of when each comes back)."""


@dataclass(frozen=True)
class Ticket:
    """A slot taken: whose, and since when (for the latency it measures)."""

    subject: str
    epoch: int
    started: float


@dataclass(eq=False)
class _Waiter:
    subject: str
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Admission:
    """The in-flight limit, its queue and its refusals (one per gateway).

    Args:
        policy: the settings.
        max_in_flight: the most slots, the ceiling of the adaptive limit.
        fair: one queue per caller, served fairly, each caller bounded to its share of the
            queue (the gateway turns it on with auth).
        clock: seconds, monotonic (tests pass their own).
        cpu: seconds of CPU of the event loop's thread, for the :class:`Pacer` (tests pass
            their own).
    """

    def __init__(
        self,
        policy: AdmissionPolicy,
        max_in_flight: int,
        *,
        fair: bool = False,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.thread_time,
    ) -> None:
        self.policy = policy
        self.max_in_flight = max_in_flight
        self.fair = fair
        self.clock = clock
        self.in_flight = 0
        self.queued = 0
        self._running: dict[str, int] = {}
        self._turn: dict[str, int] = {}
        """When each caller with requests running last got a slot (a count of grants)."""
        self._grants = 0
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._share = max(1, math.ceil(policy.max_queue * policy.caller_share))
        self.pacer = (
            Pacer(policy.fair_utilization, policy.update_interval, clock=clock, cpu=cpu)
            if fair
            else None
        )
        now = clock()
        # The rate slots free up (per second), for the waits a refused request is told.
        self._rate = 0.0
        self._done_since = 0
        self._rate_since = now
        self._wakes: list[float] = []
        # The adaptive limit: it starts by measuring the unloaded latency.
        floor = min(policy.min_in_flight, max_in_flight)
        self.limit = max_in_flight if not policy.adaptive else floor
        self.min_latency: float | None = None
        self._before_probe = min(max_in_flight, max(floor, 32))
        self._probe_epoch = 0
        self._probe_until: float | None = now + _PROBE_LONGEST if policy.adaptive else None
        self._next_probe = now + self._probe_gap()
        self._samples: list[float] = []
        self._probe_samples: list[float] = []
        self._peak = 0
        self._updated = now

    # -- taking and giving back slots -------------------------------------------------------

    async def acquire(
        self, subject: str = "", deadline: float | None = None, *, patient: bool = False
    ) -> Ticket:
        """Take a slot, at once, after a wait, or never (raises :class:`OverloadedError`);
        give it back with :meth:`release`. ``deadline`` is on the clock; ``patient`` (a
        stream's next message) waits until its deadline whatever the queue holds."""
        subject = subject if self.fair else ""
        if self.pacer is not None:
            deadline = await self._pace(subject, deadline, patient)
        if self.in_flight < self.limit and not self.queued:
            self._take(subject)
            return Ticket(subject, self._probe_epoch, self.clock())
        now = self.clock()
        budget = None if deadline is None else deadline - now
        if not patient:
            self._refuse_at_once(subject, budget)
            budget = self.policy.max_queue_wait if budget is None else budget
            budget = min(budget, self.policy.max_queue_wait)
        waiter = _Waiter(subject)
        self._waiting.setdefault(subject, deque()).append(waiter)
        self.queued += 1
        try:
            await asyncio.wait_for(asyncio.shield(waiter.granted), budget)
        except TimeoutError:
            if not self._granted(waiter):
                self._forget(waiter)
                raise self.timed_out() from None
            # else: a slot came as its time ran out: take it
        except BaseException:  # cancelled (the caller went away)
            if self._granted(waiter):
                self._give_back(subject, None, -1)  # hand the slot on
            else:
                self._forget(waiter)
            raise
        return Ticket(subject, self._probe_epoch, self.clock())

    def refusal_now(
        self, subject: str = "", deadline: float | None = None
    ) -> OverloadedError | None:
        """The refusal :meth:`acquire` would answer at once if called now (every slot taken and
        the queue full, the caller's share waiting, or the wait past its time), taking and
        queueing nothing: a door answers it before it reads a request's body."""
        subject = subject if self.fair else ""
        if self.in_flight < self.limit and not self.queued:
            return None
        try:
            self._refuse_at_once(subject, None if deadline is None else deadline - self.clock())
        except OverloadedError as exc:
            return exc
        return None

    async def _pace(self, subject: str, deadline: float | None, patient: bool) -> float | None:
        """Wait for the caller's token when it is paced (see :mod:`~meshflow.gateway.pacing`);
        return the deadline left for the queue (a paced wait counts against max_queue_wait)."""
        assert self.pacer is not None
        now = self.clock()
        budget = math.inf if deadline is None else deadline - now
        if not patient:
            budget = min(budget, self.policy.max_queue_wait)
        wait = self.pacer.admit(subject, budget)
        if wait <= 0:
            return deadline
        try:
            await asyncio.sleep(wait)
        except BaseException:
            self.pacer.give_back(subject)
            raise
        if deadline is None and not patient:
            return now + self.policy.max_queue_wait  # what is left of the wait it may do
        return deadline

    def release(self, ticket: Ticket) -> None:
        """Give a slot back; the time it was held feeds the adaptive limit."""
        self._give_back(ticket.subject, self.clock() - ticket.started, ticket.epoch)

    def _give_back(self, subject: str, latency: float | None, epoch: int) -> None:
        self.in_flight -= 1
        left = self._running.get(subject, 1) - 1
        if left:
            self._running[subject] = left
        else:
            self._running.pop(subject, None)
            if subject not in self._waiting:
                self._turn.pop(subject, None)  # nothing running or waiting: not competing
        self._done_since += 1
        if latency is not None:
            self._sample(latency, epoch)
        self._dispatch()

    def _take(self, subject: str) -> None:
        self.in_flight += 1
        self._running[subject] = self._running.get(subject, 0) + 1
        self._grants += 1
        self._turn[subject] = self._grants
        self._peak = max(self._peak, self.in_flight)

    def _dispatch(self) -> None:
        """Hand free slots to waiters: the caller with the fewest running, then the one
        served longest ago (callers take turns), its oldest request first."""
        while self.queued and self.in_flight < self.limit:
            subject = min(
                self._waiting,
                key=lambda s: (self._running.get(s, 0), self._turn.get(s, 0)),
            )
            line = self._waiting[subject]
            waiter = line.popleft()
            if not line:
                del self._waiting[subject]
            self.queued -= 1
            if waiter.granted.done():  # gave up: already counted out by _forget
                continue
            self._take(subject)
            waiter.granted.set_result(None)

    @staticmethod
    def _granted(waiter: _Waiter) -> bool:
        return waiter.granted.done() and not waiter.granted.cancelled()

    def _forget(self, waiter: _Waiter) -> None:
        waiter.granted.cancel()
        line = self._waiting.get(waiter.subject)
        if line is not None and waiter in line:
            line.remove(waiter)
            self.queued -= 1
            if not line:
                del self._waiting[waiter.subject]
                if waiter.subject not in self._running:
                    self._turn.pop(waiter.subject, None)

    # -- refusals ---------------------------------------------------------------------------

    def _refuse_at_once(self, subject: str, budget: float | None) -> None:
        if self.queued >= self.policy.max_queue:
            raise OverloadedError(
                f"the gateway runs {self.in_flight} requests and {self.queued} wait, its "
                "limit (AdmissionPolicy.max_queue): retry later",
                retry_after=self.retry_after(),
            )
        mine = len(self._waiting.get(subject, ()))
        if self.fair and mine >= self._share:
            raise ShareExceededError(
                f"{mine} requests of this caller wait already, its share of the gateway's "
                "queue (AdmissionPolicy.caller_share): retry later",
                retry_after=self.retry_after(),
            )
        wait = self.expected_wait(subject)
        limit = (
            self.policy.max_queue_wait
            if budget is None
            else min(budget, self.policy.max_queue_wait)
        )
        if wait is not None and wait > limit:
            why = "its deadline" if budget is not None and budget <= limit else "max_queue_wait"
            raise OverloadedError(
                f"the request could not start before {why} (about {wait:.2f} s of requests "
                f"wait ahead of it): retry later",
                retry_after=self.retry_after(),
            )

    def timed_out(self) -> OverloadedError:
        """The refusal of a request whose time to wait ran out in the queue."""
        return OverloadedError(
            "the request waited for a slot until its deadline (or max_queue_wait): retry later",
            retry_after=self.retry_after(),
        )

    def expected_wait(self, subject: str = "") -> float | None:
        """Seconds until a new request of ``subject`` would start, at the measured rate;
        None before any rate is known."""
        rate = self._current_rate()
        if rate <= 0:
            return None
        ahead = self.queued
        if self.fair and len(self._waiting) > 1:
            # Served in turn: about one of every waiting caller's per own request.
            mine = len(self._waiting.get(subject, ())) + 1
            ahead = min(self.queued, mine * (len(self._waiting) + (subject not in self._waiting)))
        return (ahead + 1) / rate

    def retry_after(self) -> float:
        """When a refused request has a fair chance, from 50 ms to 30 s, times a random 1 to
        1.5 (jitter); each call counts one more refused client waiting to come back.

        At least the time the queue takes to drain; and when many refused clients wait, long
        enough that they come back at no more than a tenth of the rate requests are served
        (``waiting / (0.1 * rate)``): an overloaded gateway spends its time answering, not
        refusing the same clients again and again."""
        now = self.clock()
        wakes = self._wakes
        while wakes and wakes[0] <= now:
            heapq.heappop(wakes)
        rate = self._current_rate()
        if rate > 0:
            wait = max((self.queued + 1) / rate, len(wakes) / (_REFUSAL_SHARE * rate))
        else:
            wait = 1.0
        hint = min(30.0, max(0.05, wait)) * random.uniform(1.0, 1.5)
        if len(wakes) < _MAX_WAKES:
            heapq.heappush(wakes, now + max(1.0, hint))  # HTTP rounds up to whole seconds
        return hint

    def _current_rate(self) -> float:
        now = self.clock()
        elapsed = now - self._rate_since
        if elapsed >= 0.25:
            fresh = self._done_since / elapsed
            self._rate = fresh if self._rate == 0 else 0.5 * self._rate + 0.5 * fresh
            self._done_since = 0
            self._rate_since = now
        return self._rate

    # -- the adaptive limit -----------------------------------------------------------------

    def _probe_gap(self) -> float:
        return self.policy.probe_interval * random.uniform(0.85, 1.15)

    def _sample(self, latency: float, epoch: int) -> None:
        if not self.policy.adaptive:
            return
        now = self.clock()
        if self._probe_until is not None:
            if epoch == self._probe_epoch:  # started during the probe: at low concurrency
                self._probe_samples.append(latency)
            if len(self._probe_samples) >= _PROBE_SAMPLES or now >= self._probe_until:
                self._end_probe(now)
            return
        self._samples.append(latency)
        if now >= self._next_probe:
            self._start_probe(now)
        elif now - self._updated >= self.policy.update_interval:
            self._update(now)

    def _start_probe(self, now: float) -> None:
        self._before_probe = self.limit
        self.limit = min(self.policy.min_in_flight, self.max_in_flight)
        self._probe_epoch += 1
        self._probe_samples = []
        self._probe_until = now + _PROBE_LONGEST

    def _end_probe(self, now: float) -> None:
        if self._probe_samples:
            self.min_latency = statistics.median(self._probe_samples)
        self._probe_until = None
        self._next_probe = now + self._probe_gap()
        self.limit = self._before_probe
        self._samples = []
        self._peak = self.in_flight
        self._updated = now

    def _update(self, now: float) -> None:
        samples, self._samples = self._samples, []
        peak, self._peak = self._peak, self.in_flight
        self._updated = now
        if self.min_latency is None or len(samples) < _MIN_SAMPLES:
            return
        latency = statistics.median(samples)
        target = self.min_latency * (1 + self.policy.latency_buffer)
        gradient = min(2.0, max(0.5, target / latency)) if latency > 0 else 2.0
        new = self.limit * gradient + math.sqrt(self.limit)
        if peak * 2 < self.limit:
            new = min(new, self.limit)  # demand left slots unused: no proof more would help
        floor = min(self.policy.min_in_flight, self.max_in_flight)
        self.limit = int(min(self.max_in_flight, max(floor, round(new))))
