"""A Flow forks its Python processes from a fork server: they share the pages of what they
all import, and behave as processes started fresh do (command line, environment, working
folder, logs, exit status, restarts)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from meshflow import Document, Flow

StartFlow = Callable[[Flow], Flow]

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server is Linux's")


def facts(
    flow: Flow, replicas: int = 1, names: tuple[str, ...] = (), name: str = "facts"
) -> dict[int, dict[str, Any]]:
    """Replica id -> what the process of a replica of ``name`` reports (asking until each
    replica answered)."""
    found: dict[int, dict[str, Any]] = {}
    for _ in range(20 * replicas):
        [doc] = flow.post("/", [Document()], parameters={"names": list(names)})
        fact = dict(doc.tags[name])
        found[int(fact["replica"])] = fact
        if len(found) == replicas:
            break
    assert len(found) == replicas
    return found


def subreaper() -> int:
    value = ctypes.c_int(-1)
    ctypes.CDLL(None).prctl(37, ctypes.byref(value), 0, 0, 0)  # PR_GET_CHILD_SUBREAPER
    return value.value


def test_replicas_are_forked_children_of_the_flow(
    start_flow: StartFlow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHFLOW_TEST_MARK", "from-the-flow")
    f = start_flow(
        Flow().add(uses="executors:ProcessFacts", name="facts", replicas=2, env={"ZONE": "a"})
    )
    seen = facts(f, 2, names=("MESHFLOW_TEST_MARK", "ZONE", "MESHFLOW_PARENT_PID"))
    for fact in seen.values():
        assert fact["frozen"] > 1000  # forked: the fork server's imports are frozen
        assert fact["ppid"] == os.getpid()  # adopted: the Flow waits for it and signals it
        assert fact["cmdline"][1:4] == ["-m", "meshflow", "executor"]
        assert fact["argv0"].endswith(os.path.join("meshflow", "__main__.py"))
        assert fact["cwd"] == os.getcwd()
        assert fact["env"] == {
            "MESHFLOW_TEST_MARK": "from-the-flow",
            "ZONE": "a",
            "MESHFLOW_PARENT_PID": str(os.getpid()),
        }
    # each its own random numbers: numpy's generator is reseeded after the fork
    assert seen[0]["random"] != seen[1]["random"]
    assert f.pids["executor 'facts' (shard 0, replica 0)"] == seen[0]["pid"]
    # the fork server is gone once the Flow serves, and the Flow adopts orphans no more
    assert subreaper() == 0
    log_dir = f.spec.log_dir or f._runtime.run_dir  # type: ignore[union-attr]
    with open(os.path.join(log_dir, "facts-s0-r0.log")) as fh:
        assert "serving on" in fh.read()  # the forked process's logs go to its own file


@pytest.mark.mesh("direct")
def test_fork_server_false_starts_every_process_fresh(start_flow: StartFlow) -> None:
    f = start_flow(Flow(fork_server=False).add(uses="executors:ProcessFacts", name="facts"))
    [fact] = facts(f, 1).values()
    assert fact["frozen"] == 0
    assert fact["ppid"] == os.getpid()


@pytest.mark.mesh("direct")
def test_environment_read_at_start_up_is_never_forked(start_flow: StartFlow) -> None:
    # The BLAS threads are fixed when numpy loads: the fork server loaded it already.
    f = Flow()
    f.add(uses="executors:ProcessFacts", name="blas", env={"OPENBLAS_NUM_THREADS": "1"})
    f.add(uses="executors:ProcessFacts", name="plain", needs="gateway")
    f = start_flow(f)
    assert facts(f, name="blas")[0]["frozen"] == 0
    assert facts(f, name="plain")[0]["frozen"] > 1000


@pytest.mark.mesh("direct")
def test_a_killed_forked_replica_is_restarted_fresh(
    start_flow: StartFlow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="meshflow.flow")
    f = start_flow(Flow().add(uses="executors:ProcessFacts", name="facts"))
    [before] = facts(f, 1).values()
    assert before["frozen"] > 1000
    proc = next(p for p in f._runtime.processes() if p.name.startswith("executor"))  # type: ignore[union-attr]
    os.kill(int(before["pid"]), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while proc.popen is not None and proc.popen.pid == before["pid"]:
        assert time.monotonic() < deadline, "not restarted"
        time.sleep(0.05)
    assert proc.restarts == 1
    # the Flow read its exit status, as for a process it started itself
    assert "exited with status -9" in caplog.text
    for _ in range(200):  # the gateway retries until the new process serves
        try:
            [after] = facts(f, 1).values()
            break
        except Exception:
            time.sleep(0.1)
    assert after["pid"] != before["pid"]
    assert after["frozen"] == 0  # a restart starts the process fresh


@pytest.mark.mesh("direct")
def test_a_forked_process_that_cannot_start_says_why(start_flow: StartFlow) -> None:
    from meshflow.errors import ConfigError

    with pytest.raises(ConfigError, match="NoSuchExecutor"):
        start_flow(Flow().add(uses="executors:NoSuchExecutor", name="missing"))


@pytest.mark.mesh("direct")
def test_without_a_fork_server_the_flow_starts_its_processes_fresh(
    start_flow: StartFlow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from meshflow import forkserver

    # a fork server that cannot start (it fails to import what it preloads)
    monkeypatch.setattr(forkserver, "PRELOAD", (*forkserver.PRELOAD, "no_such_module_here"))
    caplog.set_level("WARNING", logger="meshflow.flow")
    f = start_flow(Flow().add(uses="executors:ProcessFacts", name="facts"))
    [fact] = facts(f).values()
    assert fact["frozen"] == 0
    assert "no fork server" in caplog.text
    assert "No module named 'no_such_module_here'" in caplog.text
    assert subreaper() == 0


@pytest.mark.mesh("direct")
def test_a_generator_the_fork_server_loaded_is_reseeded_in_each_process(
    start_flow: StartFlow, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshflow import forkserver

    # with numpy.random loaded before the fork, every process would draw the same numbers
    monkeypatch.setattr(forkserver, "PRELOAD", (*forkserver.PRELOAD, "numpy.random"))
    f = start_flow(Flow().add(uses="executors:ProcessFacts", name="facts", replicas=2))
    seen = facts(f, 2)
    assert all(fact["frozen"] > 1000 for fact in seen.values())
    assert seen[0]["random"] != seen[1]["random"]


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as fh:
        return fh.read().strip()


@pytest.mark.mesh("direct")
def test_a_forked_process_reads_its_own_time_zone(start_flow: StartFlow) -> None:
    # the same executor forked, and started fresh (its BLAS threads differ from the Flow's)
    zone = {"TZ": "America/New_York"}
    f = Flow()
    f.add(uses="startup_facts:StartUpFacts", name="forked", env=zone)
    f.add(
        uses="startup_facts:StartUpFacts",
        name="fresh",
        env={**zone, "OPENBLAS_NUM_THREADS": "1"},
        needs="gateway",
    )
    f = start_flow(f)
    forked = facts(f, name="forked")[0]
    fresh = facts(f, name="fresh")[0]
    assert forked.pop("frozen") > 1000 and fresh.pop("frozen") == 0
    assert forked == fresh
    assert forked["zone"] == "EDT -0400"  # TZ was read again after the fork


@pytest.mark.mesh("direct")
def test_a_forked_process_has_a_fresh_ones_name_and_standard_input(
    start_flow: StartFlow,
) -> None:
    f = Flow()
    f.add(uses="executors:ProcessFacts", name="forked")
    f.add(uses="executors:ProcessFacts", name="fresh", env={"OPENBLAS_NUM_THREADS": "1"})
    f = start_flow(f)
    assert facts(f, name="forked")[0]["frozen"] > 1000
    assert facts(f, name="fresh")[0]["frozen"] == 0
    pids = [f.pids[f"executor {name!r} (shard 0, replica 0)"] for name in ("forked", "fresh")]
    # top, pgrep -x and killall know both by the interpreter's name
    assert [_comm(pid) for pid in pids] == [os.path.basename(sys.executable)[:15]] * 2
    for pid in pids:
        assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull


@pytest.mark.mesh("direct")
def test_a_locale_of_its_own_starts_the_process_fresh(start_flow: StartFlow) -> None:
    f = Flow().add(uses="startup_facts:StartUpFacts", name="posix", env={"LC_ALL": "POSIX"})
    [fact] = facts(start_flow(f), name="posix").values()
    assert fact["frozen"] == 0
    # what Python sets up at start-up for the C locale: UTF-8 mode
    assert fact["utf8_mode"] == 1
