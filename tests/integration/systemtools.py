"""System commands that tests run for real (Prometheus, Chromium, docker-compose, Node)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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


def required(message: str) -> None:
    """Fail where the tools are required (CI), skip elsewhere."""
    if os.environ.get("MESHFLOW_REQUIRE_SYSTEM_TOOLS"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class NodeProject:
    """Node with a folder's pinned npm packages installed (see :func:`node_project`)."""

    node: str
    folder: str
    flags: tuple[str, ...] = ()
    """Flags Node runs every script with."""

    def run(self, script: str, *args: str, env: dict[str, str] | None = None) -> str:
        """Run one of the folder's scripts; its standard output (it must exit 0 in 120 s)."""
        argv = [self.node, *self.flags, os.path.join(self.folder, script), *args]
        try:
            done = subprocess.run(
                argv,
                cwd=self.folder,
                env={**os.environ, **(env or {})},
                capture_output=True,
                text=True,
                timeout=120,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"node {script} did not end within 120 s: {exc.stderr!r}")
        assert done.returncode == 0, f"node {script} failed:\n{done.stderr}"
        return done.stdout


@contextmanager
def node_project(scripts: str, what: str, timeout: float) -> Iterator[NodeProject]:
    """A temporary folder holding the files of ``scripts`` (a package.json and scripts) with
    its packages installed by npm (``what`` names them in a skip or failure); removed after."""
    node = system_tool("node", "nodejs")
    npm = system_tool("npm", "npm")
    folder = tempfile.mkdtemp(prefix="meshflow-node-")
    try:
        for name in os.listdir(scripts):
            shutil.copy(os.path.join(scripts, name), folder)
        # npm talks to the registry npm is configured with; bounded retries and time, so that
        # a machine without one fails here with npm's words instead of hanging.
        env = {
            **os.environ,
            "npm_config_fetch_retries": "1",
            "npm_config_fetch_timeout": "60000",
            "npm_config_update_notifier": "false",
        }
        argv = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-save"]
        try:
            done = subprocess.run(
                argv, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            required(f"npm install of {what} took over {timeout:.0f} s")
        if done.returncode != 0:
            required(
                f"npm install of {what} failed (is the npm registry reachable?):\n"
                f"{done.stderr[-2000:]}"
            )
        yield NodeProject(node, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
