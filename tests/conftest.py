"""Shared fixtures: every Flow a test starts is stopped, even when the test fails."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
# Executor processes import tests' executors by reference ('executors:Append').
sys.path.insert(0, os.path.join(HERE, "integration"))

from netports import free_tcp_port  # noqa: E402


@pytest.fixture
def free_port() -> int:
    return free_tcp_port()


@pytest.fixture
def workspace(tmp_path: object) -> Iterator[str]:
    path = os.path.join(str(tmp_path), "ws")
    os.makedirs(path)
    yield path
