"""System commands that tests run for real (Prometheus, Chromium, docker-compose)."""

from __future__ import annotations

import os
import shutil

import pytest


def system_tool(name: str, package: str) -> str:
    """The path of ``name``. Missing, the test is skipped naming the package to install,
    except where MESHFLOW_REQUIRE_SYSTEM_TOOLS is set (``.ci/run`` sets it): there a missing
    tool fails the test instead of hiding it."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is missing: install the Debian package {package} (.ci/run does)"
        if os.environ.get("MESHFLOW_REQUIRE_SYSTEM_TOOLS"):
            pytest.fail(message)
        pytest.skip(message)
    return path
