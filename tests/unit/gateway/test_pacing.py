"""Pacing: callers sending more than an equal share get a rate while the loop is too busy."""

from __future__ import annotations

import asyncio

import pytest

from meshflow import AdmissionPolicy, ShareExceededError
from meshflow.gateway.admission import Admission
from meshflow.gateway.pacing import Pacer


class Clocks:
    """A wall clock and a CPU clock the test moves: ``busy`` of each step is chosen."""

    def __init__(self) -> None:
        self.now = 100.0
        self.cpu = 0.0

    def wall(self) -> float:
        return self.now

    def thread(self) -> float:
        return self.cpu

    def step(self, seconds: float, busy: float) -> None:
        self.now += seconds
        self.cpu += seconds * busy


def flood(
    pacer: Pacer, clocks: Clocks, per_step: dict[str, int], busy: float, steps: int
) -> dict[str, int]:
    """Each step (0.1 s of the loop at ``busy``): every caller sends its requests; returns
    how many of each were let through without a wait beyond the step."""
    passed = {s: 0 for s in per_step}
    for _ in range(steps):
        clocks.step(0.1, busy)
        for subject, count in per_step.items():
            for _ in range(count):
                try:
                    wait = pacer.admit(subject, 0.0)
                except ShareExceededError:
                    continue
                assert wait == 0.0
                passed[subject] += 1
    return passed


def test_one_caller_alone_is_never_paced_however_busy_the_loop() -> None:
    clocks = Clocks()
    pacer = Pacer(0.5, 0.1, clock=clocks.wall, cpu=clocks.thread)
    passed = flood(pacer, clocks, {"flood": 80}, busy=1.0, steps=20)
    assert passed == {"flood": 1600} and pacer.paced == {}


def test_a_flood_next_to_a_steady_caller_is_held_to_a_rate_the_steady_one_is_not() -> None:
    clocks = Clocks()
    pacer = Pacer(0.5, 0.1, clock=clocks.wall, cpu=clocks.thread)
    flood(pacer, clocks, {"flood": 80, "steady": 5}, busy=1.0, steps=3)
    assert set(pacer.paced) == {"flood"}
    first = pacer.paced["flood"]
    assert first <= 800 * 0.5 + 1
    passed = flood(pacer, clocks, {"flood": 80, "steady": 5}, busy=0.9, steps=10)
    assert passed["steady"] == 50  # every steady request, at once
    assert passed["flood"] < 800 * 0.5  # held well below what it sends
    assert pacer.paced["flood"] < first  # still above the target: lowered again
    with pytest.raises(ShareExceededError) as refused:
        for _ in range(100):
            pacer.admit("flood", 0.0)
    assert refused.value.http_status == 429 and 0.05 <= refused.value.retry_after <= 45


def test_the_rate_grows_back_when_the_loop_has_room_and_goes_when_the_flood_stops() -> None:
    clocks = Clocks()
    pacer = Pacer(0.5, 0.1, clock=clocks.wall, cpu=clocks.thread)
    flood(pacer, clocks, {"flood": 80, "steady": 5}, busy=1.0, steps=3)
    low = pacer.paced["flood"]
    flood(pacer, clocks, {"flood": 80, "steady": 5}, busy=0.2, steps=5)
    assert pacer.paced["flood"] > low
    # The steady caller leaves: one caller, no pacing.
    flood(pacer, clocks, {"flood": 80}, busy=1.0, steps=15)
    assert pacer.paced == {}
    # Both again, with a loop below the target: nobody paced.
    flood(pacer, clocks, {"flood": 80, "steady": 5}, busy=0.3, steps=5)
    assert pacer.paced == {}


def test_fair_utilization_one_turns_pacing_off() -> None:
    clocks = Clocks()
    pacer = Pacer(1.0, 0.1, clock=clocks.wall, cpu=clocks.thread)
    passed = flood(pacer, clocks, {"flood": 80, "steady": 5}, busy=1.0, steps=10)
    assert passed == {"flood": 800, "steady": 50}


def test_refused_requests_are_told_to_come_back_spread_over_the_rate() -> None:
    clocks = Clocks()
    pacer = Pacer(0.5, 0.1, clock=clocks.wall, cpu=clocks.thread)
    flood(pacer, clocks, {"flood": 80, "steady": 5}, busy=1.0, steps=3)
    rate = pacer.paced["flood"]
    hints = []
    for _ in range(200):
        try:
            pacer.admit("flood", 0.0)
        except ShareExceededError as exc:
            hints.append(exc.retry_after)
    assert len(hints) > 100
    # The later a request is refused, the later it is told to come back: the last ones
    # about (refused so far) / rate seconds out.
    assert max(hints) >= 0.8 * len(hints) / rate
    assert hints[-1] > hints[0]


def test_a_paced_request_waits_for_its_token_within_its_budget_through_admission() -> None:
    async def main() -> None:
        clocks = Clocks()
        policy = AdmissionPolicy(adaptive=False, max_queue_wait=5.0, fair_utilization=0.5)
        admission = Admission(policy, 100, fair=True, clock=clocks.wall, cpu=clocks.thread)
        assert admission.pacer is not None
        flood(admission.pacer, clocks, {"flood": 80, "steady": 5}, busy=1.0, steps=3)
        rate = admission.pacer.paced["flood"]
        while True:  # spend the bucket
            try:
                admission.pacer.admit("flood", 0.0)
            except ShareExceededError:
                break
        assert rate >= 10  # so that the waits below are short
        loop = asyncio.get_running_loop()
        started = loop.time()
        ticket = await asyncio.wait_for(admission.acquire("flood"), 5)
        assert loop.time() - started >= 0.5 / rate  # it waited for a token
        admission.release(ticket)
        # Past its budget (a deadline sooner than its token), refused at once with 429.
        for _ in range(int(rate) + 2):
            try:
                admission.pacer.admit("flood", 10.0)
            except ShareExceededError:
                break
        with pytest.raises(ShareExceededError):
            await admission.acquire("flood", clocks.now + 0.01)
        # The steady caller goes straight in.
        admission.release(await asyncio.wait_for(admission.acquire("steady"), 1))
        # A request cancelled while it waits for its token gives the token back.
        waiting = asyncio.ensure_future(admission.acquire("flood"))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert admission.in_flight == 0

    asyncio.run(asyncio.wait_for(main(), 10))


def test_without_auth_there_is_no_pacer() -> None:
    assert Admission(AdmissionPolicy(), 10).pacer is None
