"""How the gateway admits requests when it is busy, part of a Flow's spec."""

from __future__ import annotations

from dataclasses import dataclass

from meshflow.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class AdmissionPolicy:
    """The gateway's admission: how many requests run at once, how many wait, for how long.

    A request runs when a slot is free. Otherwise it waits in a queue, in arrival order (with
    auth on, one queue per token subject, served fairly: the next free slot goes to the waiting
    subject with the fewest requests running, then the one served longest ago). A request is
    refused at once, before any of its work is done, when the queue is full, when its caller's
    share of the queue is full, or when, at the rate slots free up, it could not start before
    its deadline (or within ``max_queue_wait``). Refusals are HTTP 503 (429 for a caller's
    share) with ``Retry-After`` and gRPC ``RESOURCE_EXHAUSTED`` with ``grpc-retry-pushback-ms``.

    With ``adaptive`` the number of slots follows measured latency, as Envoy's adaptive
    concurrency filter does: every ``update_interval`` the limit becomes
    ``limit * (min_latency * (1 + latency_buffer)) / latency + sqrt(limit)``, where
    ``latency`` is the median time requests held their slot in that interval and
    ``min_latency`` the median measured while the limit is held at ``min_in_flight`` for a
    moment every ``probe_interval`` seconds (the requests of that moment wait in the queue:
    nothing is refused for it). The limit stays between ``min_in_flight`` and the Flow's
    ``max_in_flight``. Without ``adaptive`` the limit is ``max_in_flight``.

    Args:
        adaptive: follow measured latency (True) or hold ``max_in_flight`` slots (False).
        min_in_flight: the fewest slots the adaptive limit keeps.
        latency_buffer: how much slower than the unloaded latency requests may run before
            the limit shrinks (2.0: three times as slow).
        update_interval: seconds between two updates of the adaptive limit.
        probe_interval: seconds between two measures of the unloaded latency.
        max_queue: requests that may wait for a slot; past it, refused at once.
        max_queue_wait: seconds a request without a deadline may wait for a slot.
        caller_share: with auth on, the part of ``max_queue`` one token subject may fill
            (its requests past that are refused with 429).
        fair_utilization: with auth on, while two or more token subjects send requests, the
            share of the time the gateway's event loop may be busy: above it, the subjects
            sending more than an equal share are held to a rate (their requests past it
            wait for a token within ``max_queue_wait``, else are refused with 429), so that
            the others' requests find the loop free (see :mod:`meshflow.gateway.pacing`).
            1.0 turns this off.
    """

    adaptive: bool = True
    min_in_flight: int = 4
    latency_buffer: float = 2.0
    update_interval: float = 0.1
    probe_interval: float = 30.0
    max_queue: int = 2048
    max_queue_wait: float = 0.1
    caller_share: float = 0.5
    fair_utilization: float = 0.3

    def __post_init__(self) -> None:
        if not isinstance(self.adaptive, bool):
            raise ConfigError(
                f"AdmissionPolicy.adaptive must be true or false, not {self.adaptive!r}"
            )
        for name in ("min_in_flight", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"AdmissionPolicy.{name} must be a whole number >= 1")
        for name, low, high in (
            ("latency_buffer", 0.0, 10.0),
            ("update_interval", 0.01, 10.0),
            ("probe_interval", 1.0, 3600.0),
            ("max_queue_wait", 0.0, 300.0),
            ("caller_share", 0.01, 1.0),
            ("fair_utilization", 0.05, 1.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"AdmissionPolicy.{name} must be a number, not {value!r}")
            if not low <= value <= high:
                raise ConfigError(f"AdmissionPolicy.{name} must be from {low} to {high}")
