"""Pacing: when callers compete, the heaviest ones get a rate, so the others keep their latency.

The in-flight limit of :mod:`meshflow.gateway.admission` shares the gateway's *slots* fairly,
but a caller sending as fast as it is answered keeps the gateway's one event loop saturated
even with few slots (a request holds its slot for a millisecond or two): every other caller's
request then waits in the loop's queue behind its traffic. The :class:`Pacer` keeps the loop
below saturation while callers compete:

- every ``update_interval`` it measures the share of the time the event loop's thread spent
  on the CPU (``busy``) and the rate each caller's requests were admitted at;
- while two or more callers sent requests in the last second and ``busy`` is above
  ``AdmissionPolicy.fair_utilization``, each caller admitted faster than an equal share of
  the total gets a rate, lowered in proportion to the excess (at most halved per update);
  below the target with room to spare, the rates grow again by 10 % per update;
- a paced caller's requests spend a token each (a bucket that fills at its rate, holding
  50 ms of it): a request without a token waits for one when it comes within the request's
  deadline and ``max_queue_wait``, and is refused at once otherwise
  (:class:`~meshflow.errors.ShareExceededError`, HTTP 429) with a ``retry_after`` that spreads
  that caller's refused requests over its rate;
- when one caller is left, or the loop idles, the rates go.

Callers sending at or below an equal share are never paced: a steady client is untouched by
another's flood, which keeps most of the gateway.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from meshflow.errors import ShareExceededError

_ACTIVE_FOR = 1.0
"""Seconds a caller counts as competing after its last request."""
_BURST = 0.05
"""Seconds of its rate a paced caller's bucket holds."""
_FLOOR = 1.0
"""The lowest rate (requests/s) a paced caller is held to."""
_MAX_COMEBACKS = 100_000
"""The most refused requests tracked (a heap of when each comes back)."""


@dataclass(eq=False)
class _Budget:
    rate: float
    tokens: float
    filled: float
    comebacks: list[float]


class Pacer:
    """Per-caller rates while callers compete (one per gateway, with auth on).

    Args:
        target: the share of the time the event loop may be busy while callers compete
            (``AdmissionPolicy.fair_utilization``; 1.0 turns pacing off).
        interval: seconds between two measures (``AdmissionPolicy.update_interval``).
        clock: seconds, monotonic; ``cpu``: seconds of CPU of the event loop's thread (tests
            pass their own).
    """

    def __init__(
        self,
        target: float,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.thread_time,
    ) -> None:
        self.target = target
        self.interval = interval
        self.clock = clock
        self.cpu = cpu
        self.busy = 0.0
        self._seen: dict[str, float] = {}
        self._sent: dict[str, int] = {}
        self._rates: dict[str, float] = {}
        self._budgets: dict[str, _Budget] = {}
        self._since = clock()
        self._cpu_since = cpu()
        self._comebacks = 0

    @property
    def paced(self) -> dict[str, float]:
        """The callers paced now and their rates (requests/s)."""
        return {subject: b.rate for subject, b in self._budgets.items()}

    def admit(self, subject: str, budget: float) -> float:
        """Count a request of ``subject``; return how long it must wait for its token (0: go
        now). Raises :class:`ShareExceededError` when that wait is longer than ``budget``
        seconds (the request's deadline or the queue's longest wait)."""
        now = self.clock()
        if now - self._since >= self.interval:
            self._update(now)
        self._seen[subject] = now
        self._sent[subject] = self._sent.get(subject, 0) + 1
        paced = self._budgets.get(subject)
        if paced is None:
            return 0.0
        paced.tokens = min(
            paced.rate * _BURST + 1.0, paced.tokens + (now - paced.filled) * paced.rate
        )
        paced.filled = now
        wait = 0.0 if paced.tokens >= 1.0 else (1.0 - paced.tokens) / paced.rate
        if wait > budget:
            raise ShareExceededError(
                f"this caller is held to {paced.rate:.0f} requests/s while others wait "
                "(AdmissionPolicy.fair_utilization): retry later",
                retry_after=self._retry_after(paced, now),
            )
        paced.tokens -= 1.0
        return wait

    def give_back(self, subject: str) -> None:
        """A request that waited for its token went away before it ran: return the token."""
        paced = self._budgets.get(subject)
        if paced is not None:
            paced.tokens += 1.0

    def _retry_after(self, paced: _Budget, now: float) -> float:
        """When the refused request may come back: after the requests of its caller already
        told to come back have had their turns at its rate, from 50 ms to 30 s, times a
        random 1 to 1.5."""
        comebacks = paced.comebacks
        while comebacks and comebacks[0] <= now:
            heapq.heappop(comebacks)
            self._comebacks -= 1
        wait = (len(comebacks) + 1) / paced.rate
        hint = min(30.0, max(0.05, wait)) * random.uniform(1.0, 1.5)
        if self._comebacks < _MAX_COMEBACKS:
            heapq.heappush(comebacks, now + max(1.0, hint))  # HTTP rounds up to seconds
            self._comebacks += 1
        return hint

    def _update(self, now: float) -> None:
        elapsed = now - self._since
        cpu = self.cpu()
        self.busy = max(0.0, (cpu - self._cpu_since) / elapsed)
        self._since, self._cpu_since = now, cpu
        for subject, count in self._sent.items():
            fresh = count / elapsed
            old = self._rates.get(subject)
            self._rates[subject] = fresh if old is None else 0.5 * old + 0.5 * fresh
        for subject in [s for s in self._rates if s not in self._sent]:
            self._rates[subject] *= 0.5
        self._sent = {}
        for subject in [s for s, seen in self._seen.items() if now - seen > _ACTIVE_FOR]:
            del self._seen[subject]
            self._rates.pop(subject, None)
            self._drop(subject)
        if len(self._seen) < 2 or self.target >= 1.0:
            for subject in list(self._budgets):
                self._drop(subject)
            return
        rates = {s: self._rates.get(s, 0.0) for s in self._seen}
        equal = sum(rates.values()) / len(rates)
        if self.busy > self.target:
            cut = max(0.5, self.target / self.busy)
            for subject, rate in rates.items():
                if rate <= equal:
                    continue
                paced = self._budgets.get(subject)
                if paced is None:
                    paced = _Budget(rate, 1.0, now, [])
                    self._budgets[subject] = paced
                paced.rate = max(_FLOOR, min(paced.rate, rate) * cut)
        elif self.busy < 0.9 * self.target:
            for subject, paced in list(self._budgets.items()):
                paced.rate *= 1.1
                if paced.rate > 2.0 * rates.get(subject, 0.0) + _FLOOR:
                    self._drop(subject)  # it sends well below its rate: no longer paced

    def _drop(self, subject: str) -> None:
        paced = self._budgets.pop(subject, None)
        if paced is not None:
            self._comebacks -= len(paced.comebacks)
