from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from meshflow import Flow


@pytest.fixture
def start_flow(workspace: str) -> Iterator[Callable[..., Flow]]:
    """Start a Flow built by the test; it is closed when the test ends, however it ends."""
    started: list[Flow] = []

    def start(flow: Flow) -> Flow:
        flow.workspace = workspace
        started.append(flow)
        return flow.start()

    yield start
    for flow in started:
        flow.close()
