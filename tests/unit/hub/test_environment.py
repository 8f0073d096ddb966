"""Environments: keyed by content, built once, by uv or (the fallback) pip."""

from __future__ import annotations

import os
import subprocess

import pytest
from hubkit import make_executor, make_library

from meshflow.hub.environment import cached_environment, ensure_environment, environment_key
from meshflow.hub.errors import EnvironmentBuildError
from meshflow.hub.index import FolderHub
from meshflow.hub.project import build
from meshflow.hub.reference import HubRef
from meshflow.hub.resolve import resolve
from meshflow.hub.sources import CONSTRAINT_ENV, Sources, parse_pip_config

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


def test_pip_config_list_is_read_with_pips_precedence() -> None:
    text = "\n".join(
        [
            "global.cert='/etc/ssl/certs/ca.crt'",
            "global.find-links='/opt/wheels'",
            "global.extra-index-url='file:///a/simple file:///b/simple'",
            "global.constraint='/etc/pip/constraints.txt'",
            "install.find-links='/srv/wheels /more/wheels'",
            ":env:.index-url='http://mirror.internal/simple'",
            ":env:.default-timeout='180'",
            "garbage without an equals sign",
        ]
    )
    sources = parse_pip_config(text)
    assert sources == Sources(
        index_url="http://mirror.internal/simple",
        extra_index_urls=("file:///a/simple", "file:///b/simple"),
        find_links=("/srv/wheels", "/more/wheels"),  # install's section over global's
        constraints=("/etc/pip/constraints.txt",),
    )
    args = sources.uv_args(default_index_set=False)
    assert args == [
        "--index", "file:///a/simple", "--index", "file:///b/simple",
        "--find-links", "/srv/wheels", "--find-links", "/more/wheels",
        "--constraint", "/etc/pip/constraints.txt",
        "--default-index", "http://mirror.internal/simple",
    ]  # fmt: skip
    assert "--default-index" not in sources.uv_args(default_index_set=True)
    assert parse_pip_config("") == Sources()


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_a_requirement_from_the_wheel_folder_pip_is_configured_with(
    installer: str, tmp_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv does not read pip's configuration; the hub hands it pip's sources, so a library
    only a local wheel folder holds (named by PIP_FIND_LINKS here) installs with either."""
    root = str(tmp_path)
    hub = FolderHub(os.path.join(root, "hub"))
    folder = os.path.dirname(make_library(os.path.join(root, "local"), "2.0.0"))
    hub.push(build(make_executor(root, "needs-local", "1.0.0", ["tinylib>=2"]), root))
    monkeypatch.setenv("MESHFLOW_HUB_INSTALLER", installer)
    monkeypatch.setenv("UV_CACHE_DIR", os.path.join(root, "uv"))
    monkeypatch.setenv("UV_DEFAULT_INDEX", hub.index_url)
    monkeypatch.setenv("PIP_INDEX_URL", hub.index_url)
    monkeypatch.setenv("PIP_FIND_LINKS", folder)
    cache = os.path.join(root, "cache")
    env = ensure_environment(
        resolve(HubRef.parse("hub://needs-local@1.0.0"), hub, cache), hub, cache, lambda _: None
    )
    assert "tinylib==2.0.0" in env.manifest()["installed"]


def test_meshflow_hub_constraint_pins_builds_and_keys_them(
    tmp_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(tmp_path)
    hub = FolderHub(os.path.join(root, "hub"))
    for version in ("1.0.0", "2.0.0"):
        hub.add(make_library(root, version))
    hub.push(build(make_executor(root, "loose", "1.0.0", ["tinylib>=1"]), root))
    monkeypatch.setenv("UV_CACHE_DIR", os.path.join(root, "uv"))
    monkeypatch.setenv("UV_DEFAULT_INDEX", hub.index_url)
    cache = os.path.join(root, "cache")
    resolved = resolve(HubRef.parse("hub://loose@1.0.0"), hub, cache)
    free = ensure_environment(resolved, hub, cache, lambda _: None)
    assert "tinylib==2.0.0" in free.manifest()["installed"]

    pins = os.path.join(root, "constraints.txt")
    with open(pins, "w") as fh:
        fh.write("tinylib==1.0.0\n")
    monkeypatch.setenv(CONSTRAINT_ENV, pins)
    assert cached_environment(resolved, cache) is None  # another key: built anew
    pinned = ensure_environment(resolved, hub, cache, lambda _: None)
    assert pinned.key != free.key
    assert "tinylib==1.0.0" in pinned.manifest()["installed"]

    monkeypatch.setenv(CONSTRAINT_ENV, os.path.join(root, "missing.txt"))
    with pytest.raises(EnvironmentBuildError, match=f"{CONSTRAINT_ENV} names .*missing.txt"):
        ensure_environment(resolved, hub, cache, lambda _: None)
