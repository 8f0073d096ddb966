"""The hub in a folder: push -> list -> show -> Flows that run hub executors, each in a
virtual environment of its own (real uv builds, real executor processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from hubkit import HubSetup, hub_environ, make_executor, populate

from meshflow import Document, Flow
from meshflow.hub.project import build

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubSetup]:
    root = str(tmp_path_factory.mktemp("hubfolder"))
    hub = populate(root)
    with hub_environ(hub.hub.location, hub.cache, os.path.join(root, "uv")):
        yield hub


def meshflow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshflow", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_push_list_show_through_the_cli(setup: HubSetup, tmp_path: str) -> None:
    project = make_executor(str(tmp_path), "cli-echo", "0.3.0", models={"w.bin": b"weights"})
    pushed = meshflow_cli("hub", "push", project)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed cli-echo 0.3.0" in pushed.stdout

    listed = meshflow_cli("hub", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "cli-echo" in rows and "0.3.0" in rows["cli-echo"]
    assert "2.0.0, 1.0.0" in rows["version-echo"]
    assert "tinylib" not in rows  # a library, not an executor

    shown = meshflow_cli("hub", "show", "cli-echo", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["version"] == "0.3.0"
    assert info["executor"] == "cli_echo.executor:CliEcho"
    assert [e["name"] for e in info["endpoints"]] == ["/default"]
    import hashlib

    assert info["models"] == [
        {"path": "cli_echo/models/w.bin", "sha256": hashlib.sha256(b"weights").hexdigest()}
    ]
    assert "building the environment of cli-echo 0.3.0" in shown.stderr  # progress shown


def test_flow_runs_a_hub_executor_on_its_own_interpreter(setup: HubSetup) -> None:
    with Flow(mesh="direct").add(name="echo", uses="hub://version-echo@1.0.0") as f:
        docs = f.post("/", inputs=[Document(text="hi")])
        hub = f.describe()["deployments"][0]["hub"]
    assert docs[0].tags["version-echo"] == "1.0.0"
    python = docs[0].tags["version-echo:python"]
    assert python.startswith(os.path.join(setup.cache, "envs"))
    assert python != sys.executable
    assert hub["name"] == "version-echo" and hub["version"] == "1.0.0"
    assert python.startswith(os.path.join(setup.cache, "envs", hub["environment"]))


def test_two_versions_of_one_executor_each_answer_as_their_version(
    setup: HubSetup, tmp_path: str
) -> None:
    f = (
        Flow(name="versions", mesh="direct", workspace=str(tmp_path))
        .add(name="old", uses="hub://version-echo@1.0.0")
        .add(name="new", uses="hub://version-echo>=1.5,<3", needs="gateway")
    )
    with f:
        old = f.post("/", inputs=[Document(text="a")], target_executor="old")
        new = f.post("/", inputs=[Document(text="b")], target_executor="new")
        described = {d["name"]: d["hub"] for d in f.describe()["deployments"]}
        answer = httpx.post(
            f.graphql_url,
            json={"query": "{ flow { deployments { name hub { name version environment } } } }"},
            timeout=30,
        ).json()
        status = meshflow_cli("status", "--name", "versions", "--workspace", str(tmp_path))
    assert old[0].tags["version-echo"] == "1.0.0"
    assert new[0].tags["version-echo"].startswith("2.")
    assert described["old"]["version"] == "1.0.0"
    assert described["new"]["version"] == new[0].tags["version-echo"]
    assert described["old"]["environment"] != described["new"]["environment"]
    graphql = {d["name"]: d["hub"] for d in answer["data"]["flow"]["deployments"]}
    assert graphql == {
        name: {"name": "version-echo", "version": d["version"], "environment": d["environment"]}
        for name, d in described.items()
    }
    assert status.returncode == 0, status.stderr
    rows = [line.split() for line in status.stdout.splitlines()]
    assert ["old", "version-echo", "1.0.0", described["old"]["environment"]] in rows


def test_incompatible_pins_of_one_library_run_side_by_side(setup: HubSetup) -> None:
    f = (
        Flow(mesh="envoy")
        .add(name="one", uses="hub://tiny-one@1.0.0")
        .add(name="two", uses="hub://tiny-two")
    )
    with f:
        docs = f.post("/", inputs=[Document(text="x")])
    assert docs[0].tags["tiny-one:tinylib"] == "1.0.0"
    assert docs[0].tags["tiny-two:tinylib"] == "2.0.0"
    # the Flow's own environment has neither
    with pytest.raises(ImportError):
        __import__("tinylib")


def test_a_new_version_pushed_is_taken_by_the_next_start(setup: HubSetup, tmp_path: str) -> None:
    wheel = build(make_executor(str(tmp_path), "version-echo", "2.1.0"), str(tmp_path))
    setup.hub.push(wheel)
    with Flow(mesh="direct").add(name="e", uses="hub://version-echo>=2,<3") as f:
        assert f.post("/", inputs=[Document()])[0].tags["version-echo"] == "2.1.0"


def test_lock_pins_the_versions_later_starts_use(setup: HubSetup, tmp_path: str) -> None:
    flow_yml = os.path.join(str(tmp_path), "flow.yml")
    with open(flow_yml, "w") as fh:
        fh.write(
            "jtype: Flow\nwith:\n  mesh: direct\nexecutors:\n"
            "  - name: echo\n    uses: hub://version-echo>=1,<2.5\n"
        )
    locked = meshflow_cli("hub", "lock", flow_yml)
    assert locked.returncode == 0, locked.stderr
    lock_file = os.path.join(str(tmp_path), "flow.hub.lock")
    assert os.path.exists(lock_file)
    with open(lock_file) as fh:
        pins = yaml.safe_load(fh)["executors"]
    pinned_version = pins["hub://version-echo>=1,<2.5"]["version"]
    assert pinned_version in ("2.0.0", "2.1.0")  # the newest allowed when it was locked
    assert f"version-echo {pinned_version}" in locked.stdout
    # a newer version that the specifier allows appears: the lock keeps the pinned one
    wheel = build(make_executor(str(tmp_path), "version-echo", "2.4.0"), str(tmp_path))
    setup.hub.push(wheel)
    with Flow.load_config(flow_yml) as f:
        assert f.post("/", inputs=[Document()])[0].tags["version-echo"] == pinned_version
        assert f.describe()["deployments"][0]["hub"]["version"] == pinned_version
    os.unlink(lock_file)
    with Flow.load_config(flow_yml) as f:  # unlocked: the newest that matches
        assert f.post("/", inputs=[Document()])[0].tags["version-echo"] == "2.4.0"


def test_exports_give_each_hub_executor_its_own_image(setup: HubSetup, tmp_path: str) -> None:
    from meshflow.deploy.compose import export_compose
    from meshflow.deploy.kubernetes import export_kubernetes

    flow = (
        Flow(name="conflict")
        .add(name="one", uses="hub://tiny-one@1.0.0")
        .add(name="two", uses="hub://tiny-two")
    )
    out = os.path.join(str(tmp_path), "out")
    os.makedirs(out)
    export_compose(flow, os.path.join(out, "docker-compose.yml"), context=str(tmp_path))
    with open(os.path.join(out, "docker-compose.yml")) as fh:
        services = yaml.safe_load(fh)["services"]
    one, two, gateway = services["one-s0-r0"], services["two-s0-r0"], services["gateway"]
    assert one["image"] == "meshflow-hub-tiny-one:1.0.0"
    assert two["image"] == "meshflow-hub-tiny-two:1.0.0"
    assert gateway["image"].startswith("meshflow-conflict:")
    assert one["build"]["dockerfile"] == "out/hub/tiny-one-1.0.0/Dockerfile"
    assert one["command"][one["command"].index("--uses") + 1] == "tiny_one.executor:TinyOne"

    folder = os.path.join(out, "hub", "tiny-one-1.0.0")
    with open(os.path.join(folder, "constraints.txt")) as fh:
        assert "tinylib==1.0.0" in fh.read().split()
    with open(os.path.join(os.path.join(out, "hub", "tiny-two-1.0.0"), "constraints.txt")) as fh:
        assert "tinylib==2.0.0" in fh.read().split()
    assert sorted(f for f in os.listdir(folder) if f.endswith(".whl")) == [
        "tiny_one-1.0.0-py3-none-any.whl",
        "tinylib-1.0.0-py3-none-any.whl",
    ]
    with open(os.path.join(folder, "Dockerfile")) as fh:
        dockerfile = fh.read()
    assert "--constraint /src/hub/constraints.txt /src/hub/tiny_one-1.0.0-py3-none-any.whl" in (
        dockerfile
    )
    assert 'org.opencontainers.image.version="1.0.0"' in dockerfile
    assert "COPY . /app" not in dockerfile  # the project (other executors) stays out

    k8s = os.path.join(str(tmp_path), "k8s")
    os.makedirs(k8s)
    export_kubernetes(flow, k8s, context=str(tmp_path))
    images = set()
    for name in os.listdir(k8s):
        if name.endswith(".yaml"):
            with open(os.path.join(k8s, name)) as fh:
                for doc in yaml.safe_load_all(fh):
                    if doc and doc.get("kind") == "Deployment":
                        for c in doc["spec"]["template"]["spec"]["containers"]:
                            images.add(c["image"])
    assert {"meshflow-hub-tiny-one:1.0.0", "meshflow-hub-tiny-two:1.0.0"} < images


def test_a_killed_hub_executor_comes_back_on_its_own_interpreter(setup: HubSetup) -> None:
    with Flow(mesh="direct").add(name="one", uses="hub://tiny-one@1.0.0") as f:
        [replica] = f.describe()["deployments"][0]["replicas"]
        victim = replica["executor"]["pid"]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            [replica] = f.describe()["deployments"][0]["replicas"]
            if replica["executor"]["pid"] != victim and replica["healthy"]:
                break
            assert time.monotonic() < deadline, "the executor did not come back"
            time.sleep(0.1)
        docs = f.post("/", inputs=[Document()])
    assert replica["executor"]["restarts"] == 1
    assert docs[0].tags["tiny-one:tinylib"] == "1.0.0"
    assert docs[0].tags["tiny-one:python"].startswith(os.path.join(setup.cache, "envs"))
