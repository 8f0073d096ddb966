"""Where a sync endpoint's call on the event loop's thread spent its time: computing,
waiting for a CPU (the machine was busy), or blocked (on I/O, a sleep, a lock).

The runtime moves an endpoint's calls off the loop when one computes or blocks for long,
and not when a busy machine only kept the thread from running: on a saturated 2-core
machine a 40 µs call takes 2-5 ms of wall time now and then. The kernel says how long a
thread waited for a CPU in ``/proc/thread-self/schedstat`` (its second field, updated each
time the thread gets a CPU back); the thread's own CPU time is exact from
``CLOCK_THREAD_CPUTIME_ID``. A full garbage collection that ran during the call is not held
against it: it would have held the GIL wherever the call ran.
"""

from __future__ import annotations

import gc
import os
import time
from typing import NamedTuple

SCHEDSTAT = "/proc/thread-self/schedstat"


class Usage(NamedTuple):
    """One thread's counters at one moment."""

    cpu: float
    """CPU seconds the thread has used."""
    waited: float | None
    """Seconds it has waited for a CPU while runnable; None where the kernel does not say."""
    full_collections: int
    """Full (generation 2) garbage collections of the process so far."""


class ThreadClock:
    """The counters of the thread that made it (the event loop's)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open(SCHEDSTAT, os.O_RDONLY)
        except OSError:
            self._fd = None

    def usage(self) -> Usage:
        waited = None
        if self._fd is not None:
            try:
                waited = int(os.pread(self._fd, 64, 0).split()[1]) / 1e9
            except (OSError, IndexError, ValueError):
                waited = None
        return Usage(time.thread_time(), waited, gc.get_stats()[2]["collections"])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def verdict(before: Usage, after: Usage, wall: float, limit: float) -> tuple[float, str]:
    """How long past ``limit`` a call that took ``wall`` seconds computed or was blocked, and
    in words; ``(0.0, '')`` if it did neither. Blocked is its wall time less its CPU time and
    its wait for a CPU; where the wait for a CPU is unknown, all of the time off the CPU
    counts as blocked."""
    if after.full_collections != before.full_collections:
        return 0.0, ""
    cpu = after.cpu - before.cpu
    if cpu > limit:
        return cpu, f"computed for {cpu * 1e3:.1f} ms"
    waited = 0.0
    if before.waited is not None and after.waited is not None:
        waited = after.waited - before.waited
    blocked = wall - cpu - waited
    if blocked > limit:
        return blocked, f"was blocked for {blocked * 1e3:.1f} ms"
    return 0.0, ""


class LoopCalls:
    """Which sync endpoints run on the event loop, and the evidence against each.

    An endpoint runs there from its second call (the first, with its one-time costs, runs in
    a worker thread) until the evidence says it should not:

    - one call that computed or was blocked for longer than ``long_call``: at once;
    - two calls that did so for longer than ``limit``, within ``window`` calls of each other.

    A short method's rare hiccup (a page fault that zeroes a huge page, a lock in the kernel)
    so holds up the loop for less than ``long_call`` now and then; a method that is long by
    nature leaves after its second call on the loop.
    """

    def __init__(
        self,
        endpoints: set[str],
        *,
        limit: float,
        long_call: float,
        window: int = 100,
    ) -> None:
        self.limit = limit
        self.long_call = long_call
        self.window = window
        self._eligible = set(endpoints)
        self._warm: set[str] = set()
        self._calls: dict[str, int] = {}
        self._struck: dict[str, int] = {}
        self._clock: ThreadClock | None = None

    def runs(self, endpoint: str) -> bool:
        """Whether ``endpoint``'s next call runs on the loop."""
        return endpoint in self._warm

    def warmed(self, endpoint: str) -> None:
        """``endpoint``'s first call ran (in a worker thread)."""
        if endpoint in self._eligible:
            self._warm.add(endpoint)

    def usage(self) -> Usage:
        """The loop thread's counters now (call it on the loop's thread)."""
        if self._clock is None:
            self._clock = ThreadClock()
        return self._clock.usage()

    def judge(self, endpoint: str, before: Usage, wall: float) -> str:
        """After a call of ``endpoint`` on the loop that took ``wall`` seconds: why its later
        calls leave the loop (for good), or ''."""
        calls = self._calls.get(endpoint, 0) + 1
        self._calls[endpoint] = calls
        if wall <= self.limit:
            return ""
        took, why = verdict(before, self.usage(), wall, self.limit)
        if not why:
            return ""
        struck = self._struck.get(endpoint)
        self._struck[endpoint] = calls
        long_call = took > self.long_call
        if not long_call and (struck is None or calls - struck > self.window):
            return ""
        self._warm.discard(endpoint)
        self._eligible.discard(endpoint)
        if long_call:
            return f"{why} on the event loop"
        return (
            f"{why} on the event loop, the second call past {self.limit * 1e3:g} ms within "
            f"{self.window} calls"
        )

    def close(self) -> None:
        if self._clock is not None:
            self._clock.close()
            self._clock = None
