"""Local processes of a Flow: start them in parallel, wait until ready, stop them all.

Every child is ``python -m meshflow <role> ...`` with its output in a log file. A child says
it is ready by writing a small JSON file (the port it bound and its pid), or says why it could
not start (``{"error": ..., "kind": "ConfigError"}``) before exiting with status 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshflow.errors import ConfigError, FlowStartError

LOG_TAIL_LINES = 25


@dataclass
class ManagedProcess:
    """One child process of a Flow."""

    name: str
    argv: list[str]
    log_path: str
    ready_file: str
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        env["MESHFLOW_PARENT_PID"] = str(os.getpid())
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "meshflow", *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def poll_ready(self) -> bool:
        """True once the child has written its ready file; raises if it died first."""
        if self.info is not None:
            return True
        info = _read_json(self.ready_file)
        if info is not None and "error" not in info:
            self.info = info
            return True
        if self.alive():
            return False
        assert self.popen is not None
        if info is not None and info.get("kind") == "ConfigError":
            raise ConfigError(str(info["error"]))
        reason = (
            info["error"] if info is not None else f"exited with status {self.popen.returncode}"
        )
        raise FlowStartError(
            f"{self.name} failed to start: {reason}", process=self.name, log_tail=self.log_tail()
        )

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Wait for the child to exit; kill it when it outlives ``timeout``."""
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def wait_all_ready(processes: Sequence[ManagedProcess], timeout: float) -> None:
    """Block until every process is ready; raise the first failure (or a timeout)."""
    deadline = time.monotonic() + timeout
    pending = list(processes)
    delay = 0.002
    while pending:
        pending = [p for p in pending if not p.poll_ready()]
        if not pending:
            return
        if time.monotonic() > deadline:
            slow = pending[0]
            raise FlowStartError(
                f"{slow.name} was not ready after {timeout:.0f} s "
                "(raise Flow(timeout_ready=...) if it loads a big model)",
                process=slow.name,
                log_tail=slow.log_tail(),
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def stop_all(processes: Sequence[ManagedProcess], timeout: float) -> None:
    """SIGTERM every process, wait up to ``timeout`` for them to drain, then SIGKILL."""
    for proc in processes:
        proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in processes:
        proc.wait(deadline - time.monotonic())
