"""Admission: slots, the queue, refusals at once, fairness between callers, the adaptive limit."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from meshflow import AdmissionPolicy, OverloadedError, ShareExceededError
from meshflow.gateway.admission import Admission, Ticket

FIXED = AdmissionPolicy(adaptive=False, max_queue=4, max_queue_wait=5.0)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_requests_past_the_limit_wait_and_start_in_arrival_order() -> None:
    async def main() -> None:
        admission = Admission(FIXED, 2)
        held = [await admission.acquire(), await admission.acquire()]
        started: list[int] = []

        async def later(i: int) -> Ticket:
            ticket = await admission.acquire()
            started.append(i)
            return ticket

        waiting = [asyncio.ensure_future(later(i)) for i in range(3)]
        await settle()
        assert started == [] and admission.queued == 3 and admission.in_flight == 2
        admission.release(held[0])
        await settle()
        assert started == [0]
        admission.release(held[1])
        admission.release(await waiting[0])
        await settle()
        assert started == [0, 1, 2] and admission.queued == 0 and admission.in_flight == 2

    run(main())


def test_a_full_queue_refuses_at_once_with_a_retry_hint() -> None:
    async def main() -> None:
        admission = Admission(FIXED, 1)
        await admission.acquire()
        waiting = [asyncio.ensure_future(admission.acquire()) for _ in range(4)]
        await settle()
        with pytest.raises(OverloadedError) as refused:
            await admission.acquire()
        assert "max_queue" in str(refused.value)
        assert 0.05 <= refused.value.retry_after <= 45
        for task in waiting:
            task.cancel()
        await settle()
        assert admission.queued == 0

    run(main())


def test_a_request_that_cannot_start_before_its_deadline_is_refused_at_once() -> None:
    async def main() -> None:
        clock = Clock()
        admission = Admission(FIXED, 1, clock=clock)
        # 4 requests done in 1 s: one slot frees every 0.25 s.
        for _ in range(4):
            admission.release(await admission.acquire())
        clock.now += 1.0
        held = await admission.acquire()
        ahead = [asyncio.ensure_future(admission.acquire()) for _ in range(2)]
        await settle()
        # Two wait ahead: a new one starts in about 0.75 s; 0.2 s is not enough.
        with pytest.raises(OverloadedError) as refused:
            await admission.acquire(deadline=clock.now + 0.2)
        assert "deadline" in str(refused.value)
        assert admission.queued == 2  # refused without joining the queue
        # 2 s is enough: it waits.
        patient = asyncio.ensure_future(admission.acquire(deadline=clock.now + 2.0))
        await settle()
        assert admission.queued == 3 and not patient.done()
        for task in [*ahead, patient]:
            task.cancel()
        admission.release(held)

    run(main())


def test_a_waiting_request_whose_time_runs_out_leaves_the_queue_refused() -> None:
    async def main() -> None:
        admission = Admission(AdmissionPolicy(adaptive=False, max_queue_wait=0.05), 1)
        held = await admission.acquire()
        with pytest.raises(OverloadedError) as refused:
            await admission.acquire()
        assert "waited" in str(refused.value)
        assert admission.queued == 0
        admission.release(held)
        assert admission.in_flight == 0
        admission.release(await admission.acquire())  # the slot went to no one else

    run(main())


def test_a_cancelled_waiter_leaves_and_a_granted_one_hands_its_slot_on() -> None:
    async def main() -> None:
        admission = Admission(FIXED, 1)
        held = await admission.acquire()
        first = asyncio.ensure_future(admission.acquire())
        second = asyncio.ensure_future(admission.acquire())
        await settle()
        first.cancel()
        await settle()
        assert admission.queued == 1
        admission.release(held)
        ticket = await second
        assert admission.in_flight == 1 and admission.queued == 0
        admission.release(ticket)
        assert admission.in_flight == 0

    run(main())


def test_streams_wait_whatever_the_queue_holds() -> None:
    async def main() -> None:
        admission = Admission(AdmissionPolicy(adaptive=False, max_queue=1), 1)
        held = await admission.acquire()
        others = [asyncio.ensure_future(admission.acquire(patient=True)) for _ in range(3)]
        await settle()
        assert admission.queued == 3 and not any(t.done() for t in others)
        admission.release(held)
        for task in others:
            admission.release(await task)

    run(main())


def test_a_flooding_caller_gets_its_share_and_the_next_slot_goes_to_another() -> None:
    async def main() -> None:
        policy = AdmissionPolicy(adaptive=False, max_queue=8, caller_share=0.5)
        admission = Admission(policy, 2, fair=True)
        flood = [await admission.acquire("flood"), await admission.acquire("flood")]
        queued = [asyncio.ensure_future(admission.acquire("flood")) for _ in range(4)]
        await settle()
        with pytest.raises(ShareExceededError) as refused:
            await admission.acquire("flood")  # 4 of 8 wait: its share
        assert refused.value.http_status == 429
        steady = asyncio.ensure_future(admission.acquire("steady"))
        await settle()
        admission.release(flood[0])
        await settle()
        assert steady.done() and not any(t.done() for t in queued)
        admission.release(await steady)
        admission.release(flood[1])
        for task in queued:
            admission.release(await task)
        assert admission.in_flight == 0 and admission.queued == 0

    run(main())


def test_without_auth_every_request_shares_one_queue() -> None:
    async def main() -> None:
        admission = Admission(AdmissionPolicy(adaptive=False, max_queue=2), 1)
        held = await admission.acquire("a")
        waiting = [asyncio.ensure_future(admission.acquire(s)) for s in ("a", "b")]
        await settle()
        with pytest.raises(OverloadedError) as refused:
            await admission.acquire("c")
        assert not isinstance(refused.value, ShareExceededError)
        admission.release(held)
        for task in waiting:
            admission.release(await task)

    run(main())


def _load(admission: Admission, clock: Clock, latency: float, seconds: float) -> None:
    """Keep every slot busy for ``seconds``, each request taking ``latency``."""

    async def main() -> None:
        end = clock.now + seconds
        while clock.now < end:
            tickets = [await admission.acquire() for _ in range(admission.limit)]
            clock.now += latency
            for ticket in tickets:
                admission.release(ticket)

    run(main())


def test_the_adaptive_limit_grows_while_latency_holds_and_shrinks_when_it_climbs() -> None:
    clock = Clock()
    policy = AdmissionPolicy(min_in_flight=4, latency_buffer=0.5, update_interval=0.1)
    admission = Admission(policy, 256, clock=clock)
    assert admission.limit == 4  # it starts by measuring the unloaded latency
    _load(admission, clock, 0.01, 1.0)
    assert admission.min_latency == pytest.approx(0.01)
    grown = admission.limit
    assert grown == 256  # latency never rose: up to the ceiling
    _load(admission, clock, 0.05, 2.0)  # 5x slower: far past 1.5x the unloaded latency
    assert admission.limit <= 16
    assert admission.limit >= policy.min_in_flight


def test_a_fixed_limit_stays_put() -> None:
    clock = Clock()
    admission = Admission(AdmissionPolicy(adaptive=False), 64, clock=clock)
    _load(admission, clock, 0.05, 1.0)
    assert admission.limit == 64


def test_policy_values_are_checked() -> None:
    from meshflow import ConfigError

    with pytest.raises(ConfigError, match="caller_share"):
        AdmissionPolicy(caller_share=0)
    with pytest.raises(ConfigError, match="max_queue"):
        AdmissionPolicy(max_queue=0)
    with pytest.raises(ConfigError, match="adaptive"):
        AdmissionPolicy(adaptive="yes")  # type: ignore[arg-type]


def test_the_retry_hint_grows_with_the_refused_clients_waiting_to_come_back() -> None:
    async def main() -> None:
        clock = Clock()
        admission = Admission(AdmissionPolicy(adaptive=False, max_queue=1), 1, clock=clock)
        for _ in range(100):  # 100 requests done in 1 s: 100 served a second
            admission.release(await admission.acquire())
        clock.now += 1.0
        held = await admission.acquire()
        first = admission.retry_after()
        assert 0.05 <= first <= 0.1 * 1.5  # nobody waits yet: about the queue's drain time
        hints = [admission.retry_after() for _ in range(199)]
        # 200 refused clients wait to come back; at 10 a second (a tenth of 100/s) the last
        # is told about 20 s.
        assert 19 <= hints[-1] <= 20 * 1.5
        assert all(0.05 <= h <= 45 for h in hints)
        clock.now += 60  # they all came back: the hint falls back
        assert admission.retry_after() < 5
        admission.release(held)

    run(main())
