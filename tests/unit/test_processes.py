"""The supervisor that restarts the children of a Flow."""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable

from meshflow.processes import ManagedProcess, Supervisor


def exiting(folder: str, name: str) -> ManagedProcess:
    """A child that exits at once, every time it is started."""
    proc = ManagedProcess(
        name=name,
        command=[sys.executable, "-c", "raise SystemExit(3)"],
        log_path=os.path.join(folder, f"{name}.log"),
        ready_file=os.path.join(folder, f"{name}.ready"),
    )
    proc.start()
    return proc


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_an_error_while_supervising_stops_no_later_restart(tmp_path: object) -> None:
    procs = [exiting(str(tmp_path), "a"), exiting(str(tmp_path), "b")]
    listed = {"calls": 0}

    def processes() -> list[ManagedProcess]:
        listed["calls"] += 1
        if listed["calls"] == 1:
            raise RuntimeError("the list of processes is being rebuilt")
        return procs

    def on_restart(proc: ManagedProcess) -> None:
        raise OSError("disk full while saving the state")

    supervisor = Supervisor(processes, on_restart=on_restart)
    supervisor.start()
    try:
        assert wait_until(lambda: all(p.restarts >= 3 for p in procs))
    finally:
        supervisor.stop()
        for p in procs:
            p.stopping = True
            p.wait(5)


def test_a_removed_process_takes_its_back_off_with_it(tmp_path: object) -> None:
    procs = [exiting(str(tmp_path), "old")]
    supervisor = Supervisor(lambda: list(procs))
    supervisor.start()
    try:
        assert wait_until(lambda: procs[0].restarts >= 2)
        with supervisor.lock:  # a scale-down removes it
            old = procs.pop()
            old.stopping = True
        old.wait(5)
        del old
        # The next process (whatever id() it gets) starts with a fresh back-off.
        assert wait_until(
            lambda: gc.collect() >= 0 and not supervisor._backoff and not supervisor._next_try
        )
    finally:
        supervisor.stop()
