"""The hub behind a real package index server (pypiserver on loopback), pushed to with twine:
push -> list -> show -> a Flow; then the server goes away and cached environments still
start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from hubkit import build_wheels, hub_environ
from netports import free_tcp_port

from meshflow import Document, Flow
from meshflow.errors import ConfigError
from meshflow.hub.errors import HubUnreachableError

pytestmark = pytest.mark.timeout(300)

NO_AUTH = ("-a", ".", "-P", ".", "--disable-fallback")
PYPI_SERVER = os.path.join(os.path.dirname(sys.executable), "pypi-server")


class IndexServer:
    def __init__(self, packages: str) -> None:
        self.port = free_tcp_port()
        self.packages = packages
        self.url = f"http://127.0.0.1:{self.port}/simple/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # -a . -P .: no authentication, so twine may upload without a password file
        self.proc = subprocess.Popen(
            [PYPI_SERVER, "run", "-i", "127.0.0.1", "-p", str(self.port), *NO_AUTH, self.packages],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("pypiserver did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[IndexServer, dict[str, str]]]:
    if shutil.which(PYPI_SERVER) is None:
        pytest.skip("pypiserver is not installed (pip install -e .[dev])")
    root = str(tmp_path_factory.mktemp("hubremote"))
    wheels = build_wheels(root)
    os.makedirs(os.path.join(root, "packages"))
    srv = IndexServer(os.path.join(root, "packages"))
    srv.start()
    try:
        with hub_environ(srv.url, os.path.join(root, "cache"), os.path.join(root, "uv"), srv.url):
            yield srv, wheels
    finally:
        srv.stop()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshflow", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_push_list_show_and_run_against_an_index_server(
    server: tuple[IndexServer, dict[str, str]],
) -> None:
    srv, wheels = server
    for key in ("tinylib==1.0.0", "tinylib==2.0.0"):
        done = cli("hub", "push", "--library", wheels[key])
        assert done.returncode == 0, done.stdout + done.stderr
    for key in ("version-echo==1.0.0", "version-echo==2.0.0", "tiny-one==1.0.0"):
        done = cli("hub", "push", wheels[key], "--hub", srv.url)
        assert done.returncode == 0, done.stdout + done.stderr
    pushed = ["tinylib==1.0.0", "tinylib==2.0.0", "version-echo==1.0.0", "version-echo==2.0.0"]
    pushed.append("tiny-one==1.0.0")
    assert sorted(os.listdir(srv.packages)) == sorted(os.path.basename(wheels[k]) for k in pushed)

    listed = cli("hub", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"tiny-one", "version-echo"}
    assert "2.0.0, 1.0.0" in rows["version-echo"]

    shown = cli("hub", "show", "tiny-one")
    assert shown.returncode == 0, shown.stderr
    assert "requirements: tinylib==1.0.0" in shown.stdout
    assert "endpoint:     /default()" in shown.stdout

    f = (
        Flow(mesh="direct")
        .add(name="echo", uses="hub://version-echo@2.0.0")
        .add(name="one", uses="hub://tiny-one")
    )
    with f:
        docs = f.post("/", inputs=[Document(text="hi")])
    assert docs[0].tags["version-echo"] == "2.0.0"
    assert docs[0].tags["tiny-one:tinylib"] == "1.0.0"


def test_unreachable_index_cached_environments_still_start(
    server: tuple[IndexServer, dict[str, str]],
) -> None:
    srv, _ = server
    with Flow(mesh="direct").add(name="echo", uses="hub://version-echo@1.0.0") as f:
        assert f.post("/", inputs=[Document()])[0].tags["version-echo"] == "1.0.0"
    srv.stop()
    try:
        with Flow(mesh="direct").add(name="echo", uses="hub://version-echo@1.0.0") as f:
            assert f.post("/", inputs=[Document()])[0].tags["version-echo"] == "1.0.0"
        # one that was never fetched cannot start: a clear error, exit status 2 in the CLI
        with pytest.raises(HubUnreachableError, match="cannot be reached") as err:
            Flow(mesh="direct").add(name="two", uses="hub://tiny-two@1.0.0").start()
        assert isinstance(err.value, ConfigError)
        shown = cli("hub", "show", "tiny-two")
        assert shown.returncode == 2
        assert "cannot be reached" in shown.stderr
    finally:
        srv.start()
