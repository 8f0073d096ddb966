"""Bad input to the hub: each error names what exists and what to do (CLI exit status 2)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hubkit import HubSetup, hub_environ, make_executor, populate

from meshflow.errors import ConfigError
from meshflow.hub.environment import ensure_environment
from meshflow.hub.errors import (
    EnvironmentBuildError,
    HashMismatchError,
    MissingMetadataError,
    UnknownExecutorError,
    VersionNotFoundError,
)
from meshflow.hub.metadata import ModelFile
from meshflow.hub.project import build
from meshflow.hub.reference import HubRef
from meshflow.hub.resolve import resolve

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubSetup]:
    root = str(tmp_path_factory.mktemp("huberrors"))
    hub = populate(root)
    with hub_environ(hub.hub.location, hub.cache, os.path.join(root, "uv")):
        yield hub


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshflow", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unknown_executor_lists_close_names(setup: HubSetup) -> None:
    with pytest.raises(UnknownExecutorError, match="did you mean version-echo"):
        resolve(HubRef.parse("hub://version-ecko@1.0.0"), setup.hub, setup.cache)
    done = cli("hub", "show", "version-ecko")
    assert done.returncode == 2
    assert "did you mean version-echo" in done.stderr


def test_version_not_found_lists_the_available_ones(setup: HubSetup) -> None:
    with pytest.raises(VersionNotFoundError, match=r"has 2\.0\.0, 1\.0\.0"):
        resolve(HubRef.parse("hub://version-echo>=3"), setup.hub, setup.cache)
    done = cli("hub", "pull", "version-echo@1.5.0")
    assert done.returncode == 2 and "has 2.0.0, 1.0.0" in done.stderr


def test_a_wheel_without_executor_metadata_is_refused(setup: HubSetup) -> None:
    library = setup.wheels["tinylib==1.0.0"]
    with pytest.raises(MissingMetadataError, match="not a meshflow executor"):
        setup.hub.push(library)
    done = cli("hub", "push", library)
    assert done.returncode == 2
    assert "meshflow hub new" in done.stderr


def test_a_file_changed_behind_the_index_is_refused(setup: HubSetup, tmp_path: str) -> None:
    wheel = build(make_executor(str(tmp_path), "tampered", "1.0.0"), str(tmp_path))
    pushed = setup.hub.push(wheel)
    target = os.path.join(setup.hub.simple, "tampered", pushed.filename)
    with open(target, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(HashMismatchError, match="does not match"):
        resolve(HubRef.parse("hub://tampered@1.0.0"), setup.hub, setup.cache)


def test_a_lock_whose_hash_differs_from_the_index_is_refused(setup: HubSetup) -> None:
    with pytest.raises(HashMismatchError, match="re-lock"):
        resolve(HubRef.parse("hub://version-echo@1.0.0#sha256=" + "0" * 64), setup.hub, setup.cache)


def test_a_model_file_whose_hash_differs_is_refused(setup: HubSetup, tmp_path: str) -> None:
    wheel = build(
        make_executor(str(tmp_path), "modelled", "1.0.0", models={"w.bin": b"w"}), str(tmp_path)
    )
    setup.hub.push(wheel)
    good = resolve(HubRef.parse("hub://modelled@1.0.0"), setup.hub, setup.cache)
    assert good.metadata.models[0].path == "modelled/models/w.bin"
    bad_meta = dataclasses.replace(
        good.metadata, models=(ModelFile("modelled/models/w.bin", "0" * 64),)
    )
    bad = dataclasses.replace(good, metadata=bad_meta)
    with pytest.raises(HashMismatchError, match=r"model file modelled/models/w\.bin"):
        ensure_environment(bad, setup.hub, os.path.join(str(tmp_path), "cache"), lambda _: None)


def test_an_unresolvable_requirement_shows_the_installers_reason(
    setup: HubSetup, tmp_path: str
) -> None:
    wheel = build(
        make_executor(str(tmp_path), "needy", "1.0.0", ["no-such-library-xyz==9.9"]),
        str(tmp_path),
    )
    setup.hub.push(wheel)
    resolved = resolve(HubRef.parse("hub://needy@1.0.0"), setup.hub, setup.cache)
    cache = os.path.join(str(tmp_path), "cache")
    with pytest.raises(EnvironmentBuildError, match="no-such-library-xyz") as err:
        ensure_environment(resolved, setup.hub, cache, lambda _: None)
    assert isinstance(err.value, ConfigError)
    assert "uv said" in str(err.value)
    assert os.listdir(os.path.join(cache, "envs")) == [
        f for f in os.listdir(os.path.join(cache, "envs")) if f.endswith(".lock")
    ]  # nothing half-built is left to be taken for a built environment
    shutil.rmtree(cache)


def test_a_build_backend_missing_here_is_built_in_isolation_and_named(
    setup: HubSetup, tmp_path: str
) -> None:
    """A project whose ``[build-system] requires`` this environment lacks is not built
    against what happens to be installed: the installer fetches the backend (here it cannot:
    no such version), and the error names the backend and how to build offline."""
    from meshflow.hub.project import unmet_build_requirements

    ready = make_executor(str(tmp_path), "ready", "1.0.0")
    assert unmet_build_requirements(ready) == []  # the scaffold's backend is a dependency
    needy = make_executor(str(tmp_path), "backend-less", "1.0.0")
    path = os.path.join(needy, "pyproject.toml")
    with open(path) as fh:
        text = fh.read()
    with open(path, "w") as fh:
        fh.write(
            text.replace(
                'requires = ["setuptools>=70.1"]',
                'requires = ["setuptools>=70.1", "no-such-backend-xyz>=1",'
                " \"other-xyz; python_version < '3'\"]",
            )
        )
    assert unmet_build_requirements(needy) == ["no-such-backend-xyz>=1"]
    with pytest.raises(EnvironmentBuildError, match="no-such-backend-xyz>=1 is not installed"):
        build(needy, str(tmp_path))
