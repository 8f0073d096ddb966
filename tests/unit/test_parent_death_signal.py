"""A child asking for a signal when its parent dies (PR_SET_PDEATHSIG) gets it when the
Flow's process dies, not when the thread that started it ends."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from meshflow.processes import in_lasting_thread

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")

ARMED = (
    "import ctypes, signal, sys, time\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"  # PR_SET_PDEATHSIG, as a sidecar's launcher
    "print('armed', flush=True)\n"
    "time.sleep(60)\n"
)


def test_a_child_started_in_the_lasting_thread_outlives_the_thread_that_asked() -> None:
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", ARMED], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
        )

    def ask() -> None:
        child = in_lasting_thread(start)
        started.append(child)
        assert child.stdout is not None
        child.stdout.readline()  # armed while this thread still lives

    thread = threading.Thread(target=ask)
    thread.start()
    thread.join(60)
    try:
        [child] = started
        time.sleep(0.5)  # the kernel's signal would have come by now
        assert child.poll() is None
    finally:
        for child in started:
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()


def test_what_fails_to_start_raises_in_the_caller() -> None:
    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(["/no/such/program"])

    with pytest.raises(FileNotFoundError):
        in_lasting_thread(start)
