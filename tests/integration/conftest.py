from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from meshflow import Flow

MESHES = ("direct", "envoy")


@pytest.fixture(params=MESHES)
def mesh(request: pytest.FixtureRequest) -> str:
    """Each Flow test runs under both meshes, unless marked ``@pytest.mark.mesh('...')``."""
    marker = request.node.get_closest_marker("mesh")
    if marker is not None and request.param not in marker.args:
        pytest.skip(f"only under mesh {', '.join(marker.args)}")
    name: str = request.param
    return name


@pytest.fixture
def start_flow(workspace: str, mesh: str) -> Iterator[Callable[[Flow], Flow]]:
    """Start a Flow built by the test, under ``mesh``; it is closed when the test ends,
    however it ends."""
    started: list[Flow] = []

    def start(flow: Flow) -> Flow:
        flow.workspace = workspace
        flow.mesh = mesh
        started.append(flow)
        return flow.start()

    yield start
    for flow in started:
        flow.close()
