"""Devices through a real Flow: each replica process sees only its own device(s) in
``CUDA_VISIBLE_DEVICES``. This machine has no GPU: the test reads the environment each
replica process reports."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meshflow import Document, Flow

StartFlow = Callable[[Flow], Flow]


def seen(flow: Flow, replicas: int) -> dict[int, str | None]:
    """Replica id -> the CUDA_VISIBLE_DEVICES its process sees (asking until each answered)."""
    found: dict[int, str | None] = {}
    for _ in range(20 * replicas):
        [doc] = flow.post("/", [Document()], parameters={"names": ["CUDA_VISIBLE_DEVICES"]})
        found[int(doc.tags["replica"])] = doc.tags["env"]["CUDA_VISIBLE_DEVICES"]
        if len(found) == replicas:
            break
    return found


def test_replicas_are_spread_over_the_flows_devices(
    start_flow: StartFlow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    flow = Flow().add(
        uses="batching_executors:Environment", name="gpu", replicas=3, gpus=1, lb="round_robin"
    )
    f = start_flow(flow)
    assert seen(f, 3) == {0: "4", 1: "7", 2: "4"}


@pytest.mark.mesh("direct")
def test_jinas_round_robin_and_explicit_devices(start_flow: StartFlow) -> None:
    f = Flow()
    f.add(uses="batching_executors:Environment", name="rr", replicas=2, needs="gateway",
          env={"CUDA_VISIBLE_DEVICES": "RR"}, devices=["2", "3"])  # fmt: skip
    f = start_flow(f)
    assert seen(f, 2) == {0: "2", 1: "3"}
