"""Local processes of a Flow: start them in parallel, wait until ready, keep them running,
stop them all.

A meshflow child (``python -m meshflow executor|gateway``) says it is ready by writing a small
JSON file (the port it bound and its pid), or says why it could not start
(``{"error": ..., "kind": "ConfigError"}``) before exiting with status 2. Other children
(Envoy sidecars) define their own readiness. The :class:`Supervisor` restarts a child that
exits on its own, with exponential backoff, as Kubernetes would.

A child that asks the kernel to stop it when its parent dies (``PR_SET_PDEATHSIG``: the
sidecars) is started from one daemon thread (:func:`in_lasting_thread`): the kernel sends that
signal when the *thread* that forked the child exits, and a Flow may be started, scaled or
supervised from threads that end long before the Flow's process does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any, ClassVar, TypeVar

from meshflow.errors import ConfigError, FlowStartError
from meshflow.forkserver import ForkedChild, ForkServer, forkable

log = logging.getLogger("meshflow.flow")

T = TypeVar("T")

LOG_TAIL_LINES = 25
BACKOFF_START = 0.2
BACKOFF_MAX = 10.0
STABLE_AFTER = 30.0


def meshflow_command(*args: str) -> list[str]:
    """The command line of a meshflow child process."""
    return [sys.executable, "-m", "meshflow", *args]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a Flow's child: this process's, ``extra``, the import path (the
    user's packages) and the Flow's pid (a child stops once the Flow is gone)."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
    env["MESHFLOW_PARENT_PID"] = str(os.getpid())
    return env


class _LastingThread:
    """One daemon thread that runs what it is given, in order, and lives until this process
    exits (a daemon thread is never joined: its OS thread ends with the process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = SimpleQueue()
        self._pid = 0  # the process the thread runs in: a forked copy of this one has none

    def submit(self, job: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._pid != os.getpid():
                self._jobs = SimpleQueue()
                threading.Thread(
                    target=self._serve, args=(self._jobs,), name="meshflow-launcher", daemon=True
                ).start()
                self._pid = os.getpid()
            self._jobs.put((job, future))
        return future

    @staticmethod
    def _serve(jobs: SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
        while True:
            job, future = jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:  # the caller's to raise
                    future.set_exception(exc)


_lasting_thread = _LastingThread()


def in_lasting_thread(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """``start()`` (a ``Popen``), run in a thread that lives as long as this process: a child
    with a parent-death signal then gets it when this process dies, not when the calling
    thread ends."""
    future = _lasting_thread.submit(start)
    try:
        return future.result()
    except BaseException:
        # Interrupted while the child starts (a fork and an exec: brief): a child nobody
        # records would outlive the Flow.
        if not future.cancel():
            with contextlib.suppress(Exception):
                popen = future.result(timeout=10)
                popen.kill()
                popen.wait()
        raise


class ManagedProcess:
    """One child process of a Flow, restartable."""

    parent_death_signal: ClassVar[bool] = False
    """Whether the child asks the kernel for a signal when its parent dies
    (``PR_SET_PDEATHSIG``): such a child is started by :func:`in_lasting_thread`."""

    def __init__(
        self,
        *,
        name: str,
        command: list[str],
        log_path: str,
        ready_file: str,
        env: dict[str, str] | None = None,
        cleanup: Sequence[str] = (),
        stdin: bytes | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.log_path = log_path
        self.ready_file = ready_file
        self.env = env or {}
        self.cleanup = list(cleanup)
        """Files removed before each (re)start: stale sockets and ready files."""
        self.stdin = stdin
        """Written to the child's standard input at each (re)start, then closed: a secret
        handed over without a file or an environment variable other processes could read."""
        self.popen: subprocess.Popen[bytes] | ForkedChild | None = None
        self.info: dict[str, Any] | None = None
        self.restarts = 0
        self.started_at = 0.0
        self.stopping = False

    def start(self, fork_server: ForkServer | None = None) -> None:
        """Start the process: forked from ``fork_server`` when given and the process can be
        (see :func:`~meshflow.forkserver.forkable`), else as a fresh one."""
        for path in [self.ready_file, *self.cleanup]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.info = None
        env = child_env(self.env)
        if fork_server is not None and forkable(self.command, env, fork_server.env):
            try:
                self.popen = fork_server.fork(
                    self.command, env=env, log_path=self.log_path, stdin=self.stdin
                )
            except OSError as exc:
                log.warning("%s: %s; starting it fresh", self.name, exc)
            else:
                self.started_at = time.monotonic()
                return

        def spawn() -> subprocess.Popen[bytes]:
            with open(self.log_path, "ab") as log_file:
                return subprocess.Popen(
                    self.command,
                    stdin=subprocess.DEVNULL if self.stdin is None else subprocess.PIPE,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    close_fds=True,
                )

        self.popen = in_lasting_thread(spawn) if self.parent_death_signal else spawn()
        if self.stdin is not None:
            assert isinstance(self.popen, subprocess.Popen) and self.popen.stdin is not None
            try:  # a few hundred bytes: fits the pipe's buffer, never blocks
                self.popen.stdin.write(self.stdin)
            except BrokenPipeError:
                pass  # the child died at once: start_error() says why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    self.popen.stdin.close()
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_ready(self) -> dict[str, Any] | None:
        """What the child reported once ready, or None while it is not (yet)."""
        info = read_json_object(self.ready_file)
        return info if info is not None and "error" not in info else None

    def poll_ready(self) -> bool:
        """True once the child is ready; raises if it died first."""
        if self.info is not None:
            return True
        info = self.check_ready()
        if info is not None:
            self.info = info
            return True
        if self.alive():
            return False
        raise self.start_error()

    def start_error(self) -> Exception:
        assert self.popen is not None
        info = read_json_object(self.ready_file)
        if info is not None and info.get("kind") == "ConfigError":
            return ConfigError(str(info["error"]))
        code = self.popen.returncode
        reason = info["error"] if info is not None else f"exited with status {code}"
        return FlowStartError(
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
        self.stopping = True
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


def read_json_object(path: str) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def wait_all_ready(
    processes: Sequence[ManagedProcess],
    timeout: float,
    *,
    also: Callable[[], bool] | None = None,
    what: str = "the mesh",
) -> None:
    """Block until every process is ready (and ``also()`` is true); raise the first failure."""
    deadline = time.monotonic() + timeout
    pending = list(processes)
    delay = 0.002
    while True:
        pending = [p for p in pending if not p.poll_ready()]
        if not pending and (also is None or also()):
            return
        if time.monotonic() > deadline:
            if not pending:
                raise FlowStartError(
                    f"{what} was not ready after {timeout:.0f} s", process=what, log_tail=""
                )
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


class Supervisor:
    """Restarts children that exit on their own, with exponential backoff per child."""

    def __init__(
        self,
        processes: Callable[[], Sequence[ManagedProcess]],
        on_restart: Callable[[ManagedProcess], None] | None = None,
    ) -> None:
        self._processes = processes
        self._on_restart = on_restart
        self._stop = threading.Event()
        # Keyed by the process object itself, weakly: a process removed by a scale-down takes
        # its back-off with it (an id() could be reused by the next one).
        self._next_try: weakref.WeakKeyDictionary[ManagedProcess, float] = (
            weakref.WeakKeyDictionary()
        )
        self._backoff: weakref.WeakKeyDictionary[ManagedProcess, float] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="meshflow-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    @property
    def lock(self) -> threading.Lock:
        """Held while restarting; hold it to change the set of processes safely."""
        return self._lock

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                self._check_all()

    def _check_all(self) -> None:
        try:
            processes = list(self._processes())
        except Exception:
            log.exception("the supervisor cannot list the Flow's processes; it goes on")
            return
        for proc in processes:
            try:
                self._check(proc)
            except Exception:  # one failure must not end every later restart
                log.exception("the supervisor failed checking %s; it goes on", proc.name)

    def _check(self, proc: ManagedProcess) -> None:
        if proc.stopping or proc.popen is None:
            return
        now = time.monotonic()
        if proc.popen.poll() is None:
            if now - proc.started_at > STABLE_AFTER:
                self._backoff.pop(proc, None)
            return
        due = self._next_try.get(proc)
        if due is None:
            delay = self._backoff.get(proc, BACKOFF_START)
            self._backoff[proc] = min(delay * 2, BACKOFF_MAX)
            self._next_try[proc] = now + delay
            log.warning(
                "%s exited with status %s; restarting in %.1f s",
                proc.name,
                proc.popen.returncode,
                delay,
            )
            return
        if now < due:
            return
        del self._next_try[proc]
        proc.restarts += 1
        try:
            proc.start()
        except OSError as exc:
            log.error("cannot restart %s: %s", proc.name, exc)
            return
        if self._on_restart is not None:
            self._on_restart(proc)
