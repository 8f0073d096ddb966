"""Envoy sidecars are stopped by the kernel when the Flow's process dies (PR_SET_PDEATHSIG),
and only then: not when the thread that started, scaled or restarted them ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from meshflow import Document, Flow


def in_a_thread_that_ends(work: Callable[[], object]) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def sidecars(f: Flow) -> dict[str, int]:
    return {name: pid for name, pid in f.pids.items() if name.startswith("sidecar")}


@pytest.fixture
def flow(workspace: str) -> Iterator[Flow]:
    f = Flow(mesh="envoy").add(uses="executors:ProcessFacts", name="facts")
    f.workspace = workspace
    try:
        yield f
    finally:
        f.close()


def test_sidecars_outlive_the_thread_that_started_the_flow(flow: Flow) -> None:
    in_a_thread_that_ends(flow.start)
    before = sidecars(flow)
    assert len(before) == 2  # the replica's and the gateway's
    time.sleep(1.0)  # the kernel's signal, and a restart, would have come by now
    for _ in range(20):
        [doc] = flow.post("/", [Document()])
        assert "facts" in doc.tags
    assert sidecars(flow) == before
    runtime = flow._runtime
    assert runtime is not None
    assert all(p.restarts == 0 and p.alive() for p in runtime.processes())


def test_sidecars_outlive_the_thread_that_scaled_the_flow(flow: Flow) -> None:
    flow.start()
    in_a_thread_that_ends(lambda: flow.scale("facts", replicas=2))
    before = sidecars(flow)
    assert len(before) == 3
    time.sleep(1.0)
    assert sidecars(flow) == before
    runtime = flow._runtime
    assert runtime is not None
    assert all(p.restarts == 0 and p.alive() for p in runtime.processes())
    seen = set()
    for _ in range(40):
        [doc] = flow.post("/", [Document()])
        seen.add(doc.tags["facts"]["replica"])
    assert seen == {0, 1}
