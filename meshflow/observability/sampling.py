"""The gateway's rate-limited head sampler (imported only when tracing is on)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


class RateLimitedSampler(Sampler):
    """Up to ``per_second`` new traces a second: a token bucket that holds a second's worth
    (at least one trace), so a burst after a quiet spell is traced too (Jaeger's
    ``ratelimiting`` sampler)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic):
        self.per_second = per_second
        self._capacity = max(per_second, 1.0)
        self._tokens = self._capacity
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        with self._lock:
            now = self._clock()
            refill = (now - self._last) * self.per_second
            self._tokens = min(self._capacity, self._tokens + refill)
            self._last = now
            sampled = self._tokens >= 1.0
            if sampled:
                self._tokens -= 1.0
        parent = get_current_span(parent_context).get_span_context()
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP,
            attributes if sampled else None,
            parent.trace_state if parent.is_valid else None,
        )

    def get_description(self) -> str:
        return f"RateLimitedSampler{{{self.per_second:g}/s}}"
