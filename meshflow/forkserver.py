"""A fork server: a Flow's Python processes share the pages of the modules they all import.

Started fresh as a meshflow child (``python -m meshflow.forkserver FD``), it imports what
every executor and gateway loads (numpy, grpc, protobuf, meshflow's runtime), moves those
objects out of the garbage collector's reach (``gc.freeze()``: a collection would write to
every shared page), and then forks one process per request. The forked processes run
``meshflow executor|gateway`` as ``python -m meshflow`` would, each with its own command
line, environment, working directory, log file and standard input.

Each process is forked twice, so that it is the Flow's own child: the fork server's child
forks the process and exits at once, and the orphan goes to the Flow's process, which is a
child subreaper (``PR_SET_CHILD_SUBREAPER``) while its fork server is open. The Flow waits
for it, signals it and reads its exit status as it does for a process it started itself.

The fork server lives while a Flow starts its processes and exits when the Flow closes it:
it would otherwise hold its pages for nothing. A process restarted later is started fresh.

Never forked: a process on another interpreter (a hub executor's environment), or one whose
environment changes what the interpreter or the preloaded libraries read once at start-up
(``PYTHON*``, ``LD_*``, ``MALLOC_*``, ``GLIBC_TUNABLES``, the BLAS threads).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import runpy
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

PRELOAD = (
    "numpy",
    "grpc",
    "grpc.aio",
    "google.protobuf.message",
    "meshflow.proto.v1.services_pb2",
    "meshflow.executor.runtime",
    "meshflow.executor.loader",
    "meshflow.cli",
    "meshflow.cli.run",
    # loaded by every process soon after it starts: OpenTelemetry's context finds its
    # implementation through the installed packages' metadata; cloudpickle reads an
    # executor defined in a script; setproctitle names the forked process
    "importlib.metadata",
    "cloudpickle",
    "setproctitle",
)
"""What every meshflow process imports; the gateway's own modules (Strawberry, uvicorn,
JWT) are left to it, or every executor would carry their pages too."""

READ_AT_START = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES")
READ_AT_START_KEYS = frozenset(
    {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS"}
)
"""Environment the interpreter, the C library or numpy's BLAS reads before a fork could
change it: a process that sets any of these differently is started fresh."""

_MESSAGE = 1 << 16
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_READY_TIMEOUT = 30.0
_REPLY_TIMEOUT = 30.0


def available() -> bool:
    """Whether processes can be forked here: Linux, where a process can adopt its
    grandchildren."""
    return sys.platform == "linux" and hasattr(socket, "send_fds")


def forkable(command: Sequence[str], env: Mapping[str, str], base: Mapping[str, str]) -> bool:
    """Whether ``command`` with ``env`` can be forked from a fork server started with
    ``base``: a ``python -m meshflow`` of this interpreter, and nothing read at start-up
    differs."""
    if list(command[:3]) != [sys.executable, "-m", "meshflow"]:
        return False
    for key in set(env) | set(base):
        if (key.startswith(READ_AT_START) or key in READ_AT_START_KEYS) and env.get(
            key
        ) != base.get(key):
            return False
    return True


class _Subreaper:
    """The Flow's process adopts orphaned descendants while at least one fork server is
    open; the setting it had before comes back after."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._before = 0

    @staticmethod
    def _prctl(option: int, value: Any) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(option, value, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def acquire(self) -> None:
        with self._lock:
            if self._users == 0:
                current = ctypes.c_int(0)
                self._prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(current))
                self._before = current.value
                self._prctl(_PR_SET_CHILD_SUBREAPER, 1)
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._prctl(_PR_SET_CHILD_SUBREAPER, self._before)


_subreaper = _Subreaper()


class ForkedChild:
    """A process forked by the fork server and adopted by this one: the part of
    :class:`subprocess.Popen` a Flow uses (``pid``, ``poll``, ``wait``, ``send_signal``,
    ``kill``, ``returncode``)."""

    def __init__(self, pid: int, args: Sequence[str]) -> None:
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere: its status is lost
                    self.returncode = -1
                else:
                    if pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    def send_signal(self, sig: int) -> None:
        # Until it is reaped (poll), the pid is this child's: no other process can have it.
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """The Flow's side of a fork server: start it, fork processes from it, close it.

    Example::

        server = ForkServer.start(log_path="run/forkserver.log")
        try:
            child = server.fork(command, env=env, log_path="run/gateway.log")
        finally:
            server.close()
    """

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket, env: dict[str, str]):
        self._popen = popen
        self._sock = sock
        self.env = env
        """The environment the fork server started with: what its children inherit."""
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def start(cls, *, log_path: str, env: Mapping[str, str] | None = None) -> ForkServer:
        """Start a fork server with ``env`` (default: this process's) and wait until it
        has imported what it preloads."""
        full_env = dict(os.environ if env is None else env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _subreaper.acquire()
        try:
            with open(log_path, "ab") as log_file:
                popen = subprocess.Popen(
                    # what it preloads on its command line: room for its children's
                    [sys.executable, "-m", "meshflow.forkserver", str(theirs.fileno()), *PRELOAD],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=full_env,
                    pass_fds=(theirs.fileno(),),
                )
        except BaseException:
            _subreaper.release()
            ours.close()
            raise
        finally:
            theirs.close()
        server = cls(popen, ours, full_env)
        try:
            reply = server._receive(_READY_TIMEOUT)
            if not reply.get("ready"):
                raise OSError(f"the fork server did not start: {reply.get('error', reply)}")
        except BaseException:
            server.close()
            raise
        return server

    def fork(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: str,
        stdin: bytes | None = None,
    ) -> ForkedChild:
        """Fork ``python -m meshflow ARGS`` (``command``) with its own environment, log file
        and standard input (``stdin`` is written to a pipe and closed, as a secret is), in
        this process's working folder."""
        if not forkable(command, env, self.env):
            raise ValueError(f"not forkable: {list(command[:3])}")
        read_fd, write_fd = os.pipe()
        try:
            if stdin is not None:
                os.write(write_fd, stdin)  # a few hundred bytes: fits the pipe's buffer
            os.close(write_fd)
            write_fd = -1
            with open(log_path, "ab") as log_file:
                request = {"argv": list(command[3:]), "env": dict(env), "cwd": os.getcwd()}
                with self._lock:
                    if self._closed:
                        raise OSError("the fork server is closed")
                    try:
                        socket.send_fds(
                            self._sock,
                            [json.dumps(request).encode()],
                            [log_file.fileno(), read_fd],
                        )
                        reply = self._receive(_REPLY_TIMEOUT)
                    except ConnectionError as exc:
                        raise OSError(f"the fork server is gone ({exc})") from None
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        if "pid" not in reply:
            raise OSError(f"the fork server could not fork: {reply.get('error', reply)}")
        return ForkedChild(int(reply["pid"]), command)

    def _receive(self, timeout: float) -> dict[str, Any]:
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(_MESSAGE)
        except TimeoutError:
            raise OSError(f"the fork server did not answer in {timeout:.0f} s") from None
        if not data:
            code = self._popen.poll()
            raise OSError(f"the fork server exited (status {code})")
        try:
            reply = json.loads(data)
        except ValueError:
            raise OSError(f"the fork server answered {data[:80]!r}") from None
        return reply if isinstance(reply, dict) else {}

    def close(self) -> None:
        """Let the fork server go (its forked processes live on) and wait for it to exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sock.close()
        try:
            self._popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait()
        finally:
            _subreaper.release()


# -- the fork server's own process -----------------------------------------------------------


def _serve(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """Fork one process per request until the Flow closes the socket. Returns, in a forked
    process only, what it must run."""
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, _MESSAGE, 2)
        except OSError:
            return None
        if not data:
            return None
        try:
            request = json.loads(data)
            if len(fds) != 2:
                raise ValueError(f"{len(fds)} file descriptors, not 2")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = _double_fork()
        except Exception as exc:  # reported to the Flow, which raises it
            for fd in fds:
                os.close(fd)
            reply: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            if pid is None:
                return request, fds
            for fd in fds:
                os.close(fd)
            reply = {"pid": pid}
        try:
            sock.send(json.dumps(reply).encode())
        except OSError:  # the Flow is gone: so is the work
            return None


def _double_fork() -> int | None:
    """The pid of a grandchild orphaned at once (so adopted by the Flow, the subreaper);
    None in the grandchild."""
    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read_fd)
        parent = os.getpid()
        try:
            pid = os.fork()
        except BaseException:
            os._exit(1)
        if pid == 0:
            os.close(write_fd)
            # Run only once adopted: until then the parent is the process about to exit.
            while os.getppid() == parent:
                time.sleep(0.0005)
            return None
        try:
            os.write(write_fd, str(pid).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        text = fh.read()
    os.waitpid(middle, 0)
    if not text:
        raise OSError("the fork failed")
    return int(text)


def _run(request: dict[str, Any], fds: list[int]) -> int:
    """In a forked process: become ``python -m meshflow ARGV`` and run it."""
    log_fd, stdin_fd = fds
    argv = [str(a) for a in request["argv"]]
    # ps and top show the command line a fresh start would have, cut to the fork server's
    # own length: its environment (/proc/PID/environ) is left as it was
    import setproctitle  # the Flow's environment has it; a hub environment need not

    os.environ["SPT_NOENV"] = "1"
    setproctitle.setproctitle(shlex.join([sys.executable, "-m", "meshflow", *argv]))
    os.dup2(stdin_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(stdin_fd)
    os.close(log_fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    if "numpy.random" in sys.modules:  # its global generator is the fork server's: reseed
        sys.modules["numpy.random"].seed()
    # exactly what `python -m meshflow ARGV` runs (meshflow/__main__.py exits with its status)
    sys.argv = ["-m", *argv]
    runpy.run_module("meshflow", run_name="__main__", alter_sys=True)
    return 0


def _main(fd: int, preload: Sequence[str]) -> int:
    sock = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the Flow, which closes us
    try:
        for name in preload:
            importlib.import_module(name)
    except Exception as exc:  # reported to the Flow, which starts fresh
        sock.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        return 1
    gc.collect()
    gc.freeze()
    sock.send(b'{"ready": true}')
    job = _serve(sock)
    if job is None:
        return 0
    sock.close()
    return _run(*job)


if __name__ == "__main__":
    sys.exit(_main(int(sys.argv[1]), sys.argv[2:]))
