"""The fork server on its own: which processes it may fork, and forking real ones."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Iterator

import pytest

from meshflow.forkserver import ForkServer, available, forkable
from meshflow.processes import child_env, meshflow_command

pytestmark = pytest.mark.skipif(not available(), reason="the fork server is Linux's")

BASE = {"PATH": "/usr/bin", "HOME": "/root", "PYTHONPATH": "/app"}


def test_a_meshflow_command_with_the_same_start_up_environment_is_forkable() -> None:
    env = {**BASE, "CUDA_VISIBLE_DEVICES": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}
    assert forkable(meshflow_command("executor", "--name", "a"), env, BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"PYTHONHASHSEED": "0"},
        {"PYTHONPATH": "/elsewhere"},
        {"LD_PRELOAD": "/lib/libjemalloc.so"},
        {"MALLOC_ARENA_MAX": "2"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"},
        {"OMP_NUM_THREADS": "1"},
        {"OPENBLAS_NUM_THREADS": "4"},
    ],
)
def test_what_is_read_at_start_up_is_never_forked(change: dict[str, str]) -> None:
    assert not forkable(meshflow_command("executor"), {**BASE, **change}, BASE)
    # nor when the fork server has it and the process does not
    assert not forkable(meshflow_command("executor"), BASE, {**BASE, **change})


def test_another_interpreter_or_program_is_never_forked() -> None:
    assert not forkable(["/opt/hub/env/bin/python", "-m", "meshflow", "executor"], BASE, BASE)
    assert not forkable(["envoy", "-c", "envoy.yaml"], BASE, BASE)
    assert not forkable([sys.executable, "-m", "other"], BASE, BASE)


def _subreaper() -> int:
    value = ctypes.c_int(-1)
    ctypes.CDLL(None).prctl(37, ctypes.byref(value), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    return value.value


@pytest.fixture
def server(tmp_path: object) -> Iterator[ForkServer]:
    srv = ForkServer.start(log_path=os.path.join(str(tmp_path), "fs.log"), env=child_env({}))
    try:
        yield srv
    finally:
        srv.close()


def test_forked_processes_run_their_command_and_report_their_status(
    server: ForkServer, tmp_path: object
) -> None:
    assert _subreaper() == 1  # orphans come to this process while the server is open
    ok_log = os.path.join(str(tmp_path), "ok.log")
    bad_log = os.path.join(str(tmp_path), "bad.log")
    ok = server.fork(meshflow_command("--version"), env=child_env({}), log_path=ok_log)
    bad = server.fork(meshflow_command("no-such-command"), env=child_env({}), log_path=bad_log)
    assert ok.wait(30) == 0
    assert bad.wait(30) == 2
    with open(ok_log) as fh:
        assert fh.read().startswith("meshflow ")
    with open(bad_log) as fh:
        assert "invalid choice: 'no-such-command'" in fh.read()


def test_concurrent_forks_each_get_their_own_process(server: ForkServer, tmp_path: object) -> None:
    children = []

    def fork(i: int) -> None:
        log = os.path.join(str(tmp_path), f"{i}.log")
        children.append(server.fork(meshflow_command("--version"), env=child_env({}), log_path=log))

    threads = [threading.Thread(target=fork, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len({c.pid for c in children}) == 6
    assert [c.wait(30) for c in children] == [0] * 6


def test_a_closed_or_dead_fork_server_refuses_to_fork(tmp_path: object) -> None:
    log = os.path.join(str(tmp_path), "fs.log")
    srv = ForkServer.start(log_path=log, env=child_env({}))
    srv._popen.kill()  # the fork server died
    with pytest.raises(OSError, match="fork server"):
        srv.fork(meshflow_command("--version"), env=child_env({}), log_path=log)
    srv.close()
    with pytest.raises(OSError, match="closed"):
        srv.fork(meshflow_command("--version"), env=child_env({}), log_path=log)
    assert _subreaper() == 0  # the setting this process had before


def test_a_process_that_is_not_forkable_is_refused(server: ForkServer, tmp_path: object) -> None:
    env = {**child_env({}), "PYTHONHASHSEED": "7"}
    with pytest.raises(ValueError, match="not forkable"):
        server.fork(meshflow_command("--version"), env=env, log_path=str(tmp_path) + "/x.log")


def test_the_flow_option_is_checked_and_read_from_yaml(tmp_path: object) -> None:
    from meshflow import Flow
    from meshflow.errors import ConfigError

    assert Flow().fork_server is True
    with pytest.raises(ConfigError, match="fork_server must be true or false, got 'no'"):
        Flow(fork_server="no")
    path = os.path.join(str(tmp_path), "flow.yml")
    flow_yaml = "jtype: Flow\nwith:\n  fork_server: {}\nexecutors:\n  - uses: meshflow:Executor\n"
    with open(path, "w") as fh:
        fh.write(flow_yaml.format("false"))
    assert Flow.load_config(path).fork_server is False
    with open(path, "w") as fh:
        fh.write(flow_yaml.format("sometimes"))
    with pytest.raises(ConfigError, match="fork_server must be true or false"):
        Flow.load_config(path)
