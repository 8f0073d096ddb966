from __future__ import annotations

import pytest

from meshflow.gateway import tarpit as tarpit_module
from meshflow.gateway.tarpit import Tarpit, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(tarpit_module.time, "monotonic", clock)
    return clock


def test_a_client_never_refused_never_waits(clock: Clock) -> None:
    pit = Tarpit(rate=2, burst=3)
    for _ in range(100):
        assert pit.admit("10.0.0.1") == 0.0


def test_refusals_past_the_burst_make_the_client_wait_its_turn(clock: Clock) -> None:
    pit = Tarpit(rate=2, burst=3)
    for _ in range(3):
        assert pit.admit("10.0.0.1") == 0.0
        pit.strike("10.0.0.1")
    # The burst is spent: one more refusal each half second.
    pit.strike("10.0.0.1")
    assert pit.admit("10.0.0.1") == pytest.approx(0.5)
    # A second request waiting at the same time waits behind the first (the turn the first
    # took is its refusal: the guard does not count it again).
    assert pit.admit("10.0.0.1") == pytest.approx(1.0)
    clock.now += 1.0
    assert pit.admit("10.0.0.1") == pytest.approx(0.5)
    # Another client is not slowed down.
    assert pit.admit("10.0.0.2") == 0.0
    clock.now += 10
    assert pit.admit("10.0.0.1") == 0.0


def test_a_wait_longer_than_max_wait_is_refused_at_once(clock: Clock) -> None:
    pit = Tarpit(rate=1, burst=1, max_wait=2.0)
    for _ in range(50):
        pit.strike("10.0.0.1")
    waits = [pit.admit("10.0.0.1") for _ in range(4)]
    assert waits[0] == pytest.approx(2.0)
    assert waits[-1] is None


def test_clients_remembered_are_bounded(clock: Clock) -> None:
    pit = Tarpit(rate=1, burst=1, max_clients=100)
    for i in range(10_000):
        pit.strike(f"10.0.{i // 256}.{i % 256}")
    assert len(pit._free_at) == 100


def test_ipv6_clients_are_counted_per_64_network() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key("testclient") == "testclient"
