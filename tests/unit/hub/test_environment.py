"""Environments: keyed by content, built once, by uv or (the fallback) pip."""

from __future__ import annotations

import os
import subprocess

import pytest
from hubkit import make_executor, make_library

from meshflow.hub.environment import cached_environment, ensure_environment, environment_key
from meshflow.hub.index import FolderHub
from meshflow.hub.project import build
from meshflow.hub.reference import HubRef
from meshflow.hub.resolve import resolve

pytestmark = pytest.mark.timeout(180)


def test_the_key_follows_the_wheel_and_its_requirements() -> None:
    key = environment_key("a" * 64, ("x==1",))
    assert key == environment_key("a" * 64, ("x==1",))
    assert key != environment_key("b" * 64, ("x==1",))
    assert key != environment_key("a" * 64, ("x==2",))


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_an_environment_holds_the_executor_and_its_pinned_requirement(
    installer: str, tmp_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(tmp_path)
    hub = FolderHub(os.path.join(root, "hub"))
    hub.add(make_library(root, "1.0.0"))
    hub.push(build(make_executor(root, "pinned", "1.0.0", ["tinylib==1.0.0"]), root))
    monkeypatch.setenv("MESHFLOW_HUB_INSTALLER", installer)
    monkeypatch.setenv("UV_CACHE_DIR", os.path.join(root, "uv"))
    monkeypatch.setenv("UV_DEFAULT_INDEX", hub.index_url)
    monkeypatch.setenv("PIP_INDEX_URL", hub.index_url)  # nothing from elsewhere
    cache = os.path.join(root, "cache")
    resolved = resolve(HubRef.parse("hub://pinned@1.0.0"), hub, cache)
    lines: list[str] = []
    env = ensure_environment(resolved, hub, cache, lines.append)
    assert env.built_now
    assert any(installer in line for line in lines[:1])  # progress names the installer
    assert "tinylib==1.0.0" in env.manifest()["installed"]
    seen = subprocess.run(
        [
            env.python,
            "-I",
            "-c",
            "import importlib.util as u, tinylib; "
            "print(tinylib.VERSION, bool(u.find_spec('pinned')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert seen.stdout.split() == ["1.0.0", "True"]
    again = ensure_environment(resolved, hub, cache, lines.append)
    assert not again.built_now and again.path == env.path
    assert cached_environment(resolved, cache) == again
