"""The fork server on its own: which processes it may fork, and forking real ones."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from meshflow import forkserver
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
        {"LANG": "C"},
        {"LC_ALL": "POSIX"},
        {"LC_CTYPE": "C.UTF-8"},
    ],
)
def test_what_is_read_at_start_up_is_never_forked(change: dict[str, str]) -> None:
    assert not forkable(meshflow_command("executor"), {**BASE, **change}, BASE)
    # nor when the fork server has it and the process does not
    assert not forkable(meshflow_command("executor"), BASE, {**BASE, **change})


def test_a_time_zone_of_its_own_is_forked() -> None:
    # the forked process reads TZ again (time.tzset())
    assert forkable(meshflow_command("executor"), {**BASE, "TZ": "America/New_York"}, BASE)


def test_another_interpreter_or_program_is_never_forked() -> None:
    assert not forkable(["/opt/hub/env/bin/python", "-m", "meshflow", "executor"], BASE, BASE)
    assert not forkable(["envoy", "-c", "envoy.yaml"], BASE, BASE)
    assert not forkable([sys.executable, "-m", "other"], BASE, BASE)


def _subreaper() -> int:
    value = ctypes.c_int(-1)
    ctypes.CDLL(None).prctl(37, ctypes.byref(value), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    return value.value


def _children() -> dict[int, str]:
    """This process's children: pid -> state (``Z``: a zombie nobody reaped)."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found[int(name)] = fields[0]
    return found


@pytest.fixture(autouse=True)
def no_child_left() -> Iterator[None]:
    """Whatever a test leaves behind among this process's children is killed and reaped (a
    test asserts first that there is nothing to leave)."""
    before = set(_children())
    yield
    for pid in set(_children()) - before:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


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


def test_the_flow_adopts_orphans_only_while_a_fork_is_in_flight(
    server: ForkServer, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    during = []
    receive = server._receive

    def watched(timeout: float) -> dict[str, object]:
        during.append(_subreaper())
        return receive(timeout)

    monkeypatch.setattr(server, "_receive", watched)
    child = server.fork(
        meshflow_command("--version"), env=child_env({}), log_path=f"{tmp_path}/ok.log"
    )
    assert during == [1]  # the forked process is adopted ...
    assert child.wait(30) == 0  # ... so this process waits for it
    assert _subreaper() == 0  # and only then: another program's orphan is not ours to reap
    out = subprocess.run(
        ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    orphan = int(out.stdout)
    try:
        with open(f"/proc/{orphan}/stat") as fh:
            assert int(fh.read().rsplit(")", 1)[1].split()[1]) != os.getpid()
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_an_interrupted_fork_leaves_no_process_behind(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = ForkServer.start(log_path=f"{tmp_path}/fs.log", env=child_env({}))
    before = _children()

    def interrupted(timeout: float) -> dict[str, object]:
        raise KeyboardInterrupt  # Ctrl-C while the request is on its way

    monkeypatch.setattr(srv, "_receive", interrupted)
    with pytest.raises(KeyboardInterrupt):
        srv.fork(meshflow_command("--version"), env=child_env({}), log_path=f"{tmp_path}/a.log")
    monkeypatch.undo()
    # its reply may come any time: the server forks no more ...
    with pytest.raises(OSError, match="not used any more"):
        srv.fork(meshflow_command("--version"), env=child_env({}), log_path=f"{tmp_path}/b.log")
    srv.close()
    # ... and closing it killed and reaped the process the interrupted request forked
    assert _children() == {pid: st for pid, st in before.items() if pid != srv._popen.pid}
    assert _subreaper() == 0


def test_a_late_reply_is_never_taken_for_the_next_process(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forkserver, "_REPLY_TIMEOUT", 0.5)
    srv = ForkServer.start(log_path=f"{tmp_path}/fs.log", env=child_env({}))
    before = _children()
    os.kill(srv._popen.pid, signal.SIGSTOP)  # the fork server stalls past the timeout
    try:
        with pytest.raises(OSError, match="did not answer"):
            srv.fork(meshflow_command("--version"), env=child_env({}), log_path=f"{tmp_path}/a.log")
    finally:
        os.kill(srv._popen.pid, signal.SIGCONT)
    with pytest.raises(OSError, match="not used any more"):
        srv.fork(meshflow_command("--version"), env=child_env({}), log_path=f"{tmp_path}/b.log")
    # were it asked anyway, the late reply is recognised as another request's, not returned
    srv._broken = None
    with pytest.raises(OSError, match="answered request 1 to request 2"):
        srv.fork(meshflow_command("--version"), env=child_env({}), log_path=f"{tmp_path}/c.log")
    srv.close()
    # the late process and the one asked for last are both killed and reaped
    assert _children() == {pid: st for pid, st in before.items() if pid != srv._popen.pid}
    assert _subreaper() == 0
