from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from meshflow import Flow

MESHES = ("direct", "envoy")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each Flow test runs under both meshes, unless marked ``@pytest.mark.mesh('...')``."""
    if "mesh" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("mesh")
        metafunc.parametrize("mesh", marker.args if marker else MESHES)


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
