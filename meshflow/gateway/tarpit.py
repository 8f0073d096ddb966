"""Slowing down the clients whose queries the guards keep refusing.

Refusing a hostile query is cheap (about a millisecond of parsing), but a client sending
them as fast as they are answered still takes that millisecond from everyone else, again
and again. A :class:`Tarpit` lets each client address be refused ``burst`` times at once and
then ``rate`` times a second: past that, its next requests wait (without using the CPU)
until its turn comes, and are answered 429 with ``Retry-After`` at once when the wait would
be longer than ``max_wait``. Clients that are never refused never wait.

The same rule as a token bucket per client (GCRA, as in rate limiters of HTTP proxies):
each refusal moves the client's ``free_at`` time ``1 / rate`` seconds on; a request may
start when ``free_at`` is in the past. IPv6 clients are counted per /64 network (what one
host usually holds), and the number of clients remembered is bounded.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections import OrderedDict

HELD = "meshflow_tarpit_held"
"""Set in an ASGI scope's state when the request waited its turn: the turn it took is the
refusal it may get, which then counts no second time."""


class Tarpit:
    """Per-client budget of refusals; see the module's docstring for the rule."""

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        max_wait: float = 5.0,
        max_clients: int = 10_000,
    ) -> None:
        self.interval = 1.0 / rate
        self.burst = burst
        self.max_wait = max_wait
        self.max_clients = max_clients
        self._free_at: OrderedDict[str, float] = OrderedDict()

    def strike(self, client: str | None) -> None:
        """Count one refusal against ``client``."""
        if client is None:
            return
        key = client_key(client)
        now = time.monotonic()
        earliest = now - self.burst * self.interval
        free_at = max(self._free_at.get(key, earliest), earliest) + self.interval
        self._free_at[key] = min(free_at, now + self.max_wait)
        self._free_at.move_to_end(key)
        while len(self._free_at) > self.max_clients:
            self._free_at.popitem(last=False)

    def admit(self, client: str | None) -> float | None:
        """Seconds ``client`` waits before its request may start (0.0 for most), or None when
        it would wait longer than ``max_wait``: refuse it now.

        A waiting request takes its turn (as if it were refused): the next one from the same
        client waits behind it, and its own refusal, if it comes, is not counted again.
        """
        if client is None:
            return 0.0
        key = client_key(client)
        free_at = self._free_at.get(key)
        now = time.monotonic()
        if free_at is None or free_at <= now:
            return 0.0
        wait = free_at - now
        if wait > self.max_wait:
            return None
        self._free_at[key] = free_at + self.interval
        return wait


@functools.lru_cache(maxsize=4096)  # asked on every request; bounded against address churn
def client_key(host: str) -> str:
    """The address a client is counted by: itself, or its /64 network for IPv6."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
