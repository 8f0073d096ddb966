"""A fork server: a Flow's Python processes share the pages of the modules they all import.

Started fresh as a meshflow child (``python -m meshflow.forkserver FD``), it imports what
every executor and gateway loads (numpy, grpc, protobuf, meshflow's runtime), moves those
objects out of the garbage collector's reach (``gc.freeze()``: a collection would write to
every shared page), and then forks one process per request. The forked processes run
``meshflow executor|gateway`` as ``python -m meshflow`` would, each with its own command
line, environment, working directory, log file and standard input.

Each process is forked twice, so that it is the Flow's own child: the fork server's child
forks the process and exits at once, and the orphan goes to the Flow's process, which is a
child subreaper (``PR_SET_CHILD_SUBREAPER``) while a fork request is in flight (from just
before the request until its reply, which comes once the orphan was adopted). The Flow waits
for it, signals it and reads its exit status as it does for a process it started itself.

Requests carry an id that the reply echoes. A request that fails after it was sent (no reply
in time, an interrupt, a lost connection) leaves the fork server unusable: its reply may
still come, with the pid of a process the Flow never recorded. :meth:`ForkServer.close`
reads every reply left and kills and reaps those processes.

The fork server lives while a Flow starts its processes and exits when the Flow closes it:
it would otherwise hold its pages for nothing. A process restarted later is started fresh.

Never forked: a process on another interpreter (a hub executor's environment), or one whose
environment changes what the interpreter, the C library or the preloaded libraries read once
at start-up (``PYTHON*``, ``LD_*``, ``MALLOC_*``, ``GLIBC_TUNABLES``, the BLAS threads, the
locale: ``LANG``, ``LC_*``). ``TZ`` is read again (``time.tzset()``) in each forked process.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import logging
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

READ_AT_START = ("PYTHON", "LD_", "MALLOC_", "GLIBC_TUNABLES", "LC_")
READ_AT_START_KEYS = frozenset(
    {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS", "LANG"}
)
"""Environment the interpreter, the C library or numpy's BLAS reads before a fork could
change it (the locale: Python sets ``LC_CTYPE`` and its UTF-8 mode from it at start-up): a
process that sets any of these differently is started fresh."""

_MESSAGE = 1 << 16
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_READY_TIMEOUT = 30.0
_REPLY_TIMEOUT = 30.0
_CLOSE_TIMEOUT = 10.0
"""How long :meth:`ForkServer.close` waits for replies left and for the fork server to exit
before it kills the fork server."""

log = logging.getLogger("meshflow.flow")


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
    """The Flow's process adopts orphaned descendants while at least one fork request is in
    flight (of any fork server, in any thread); the setting it had before comes back after.

    Holders are named (a fork server each), so that releasing twice, or releasing what was
    never acquired, is harmless: a fork server's :meth:`ForkServer.close` releases whatever
    an interrupted request left held.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: set[object] = set()
        self._before = 0

    @staticmethod
    def _prctl(option: int, value: Any) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(option, value, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def acquire(self, holder: object) -> None:
        with self._lock:
            if holder in self._holders:
                return
            if not self._holders:
                current = ctypes.c_int(0)
                self._prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(current))
                self._before = current.value
                self._prctl(_PR_SET_CHILD_SUBREAPER, 1)
            self._holders.add(holder)

    def release(self, holder: object) -> None:
        with self._lock:
            if holder not in self._holders:
                return
            self._holders.discard(holder)
            if not self._holders:
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
        self._broken: str | None = None
        """Why no request is sent any more: one failed after it was sent, and its reply (a
        process the Flow never recorded) may still come, to be read by :meth:`close`."""
        self._last_id = 0

    @classmethod
    def start(cls, *, log_path: str, env: Mapping[str, str] | None = None) -> ForkServer:
        """Start a fork server with ``env`` (default: this process's) and wait until it
        has imported what it preloads."""
        full_env = dict(os.environ if env is None else env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
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
        and standard input (``stdin`` is written to a pipe and closed, as a secret is;
        without it, ``/dev/null`` as for a fresh process), in this process's working
        folder."""
        if not forkable(command, env, self.env):
            raise ValueError(f"not forkable: {list(command[:3])}")
        if stdin is None:
            stdin_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        else:
            stdin_fd, write_fd = os.pipe()
            try:
                os.write(write_fd, stdin)  # a few hundred bytes: fits the pipe's buffer
            except BaseException:
                os.close(stdin_fd)
                raise
            finally:
                os.close(write_fd)
        try:
            with open(log_path, "ab") as log_file, self._lock:
                if self._closed:
                    raise OSError("the fork server is closed")
                if self._broken is not None:
                    raise OSError(f"the fork server is not used any more: {self._broken}")
                self._last_id += 1
                request = {
                    "id": self._last_id,
                    "argv": list(command[3:]),
                    "env": dict(env),
                    "cwd": os.getcwd(),
                }
                return self._request(request, [log_file.fileno(), stdin_fd], command)
        finally:
            os.close(stdin_fd)

    def _request(
        self, request: dict[str, Any], fds: list[int], command: Sequence[str]
    ) -> ForkedChild:
        """Send one request and return its process; with ``self._lock`` held."""
        pid: int | None = None  # forked for us and not handed out (yet)
        child: ForkedChild | None = None
        try:
            # Adopt the grandchild: it is orphaned before the reply is sent, so holding the
            # setting until the reply is enough, and the window for other orphans is short.
            _subreaper.acquire(self)
            socket.send_fds(self._sock, [json.dumps(request).encode()], fds)
            reply = self._receive(_REPLY_TIMEOUT)
            if "pid" in reply:
                pid = int(reply["pid"])
            if reply.get("id") != request["id"]:
                raise OSError(
                    f"the fork server answered request {reply.get('id')} to request {request['id']}"
                )
            if pid is not None:
                child = ForkedChild(pid, command)
                pid = None
        except BaseException as exc:
            # The reply to this request may come later, or a reply already read may be
            # another request's: a process nobody records. close() reads what is left, then
            # kills those processes and releases the subreaper setting (kept until then,
            # so that this process adopts them and their pids stay its own).
            self._broken = f"a fork request failed ({type(exc).__name__}: {exc})"
            if pid is not None:
                _kill_and_reap(pid)
            if isinstance(exc, ConnectionError):
                raise OSError(f"the fork server is gone ({exc})") from None
            raise
        _subreaper.release(self)
        if child is None:  # it could not fork, and serves on
            raise OSError(f"the fork server could not fork: {reply.get('error', reply)}")
        return child

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
        """Let the fork server go (its forked processes live on) and wait for it to exit.

        A process it forked for a request that failed (its reply came too late, or the
        Flow was interrupted while waiting) is killed: nobody would ever stop it.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            deadline = time.monotonic() + _CLOSE_TIMEOUT
            strays: list[int] = []
            try:
                # No more requests: the fork server answers those it has, then sees the end
                # of its input and exits, which ends ours.
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)
                strays = self._unclaimed(deadline)
            finally:
                self._sock.close()
                try:
                    self._popen.wait(timeout=max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    self._popen.kill()
                    self._popen.wait()
                finally:
                    for pid in strays:
                        _kill_and_reap(pid)
                    _subreaper.release(self)

    def _unclaimed(self, deadline: float) -> list[int]:
        """The pids in the replies still in the socket (to requests that failed after they
        were sent), read until the fork server's end or ``deadline``."""
        pids: list[int] = []
        while (left := deadline - time.monotonic()) > 0:
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(_MESSAGE)
            except OSError:  # the deadline (TimeoutError) or a reset
                break
            if not data:
                break
            with contextlib.suppress(ValueError, TypeError):
                reply = json.loads(data)
                if isinstance(reply, dict) and "pid" in reply:
                    pids.append(int(reply["pid"]))
        if pids:
            log.warning("the fork server forked %s for requests that failed; killing them", pids)
        return pids


def _kill_and_reap(pid: int) -> None:
    """Kill and reap a forked process nobody recorded. This process adopted it (it held the
    subreaper setting), so the pid is its own until reaped: no other process can have it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


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
        request_id = None
        try:
            request = json.loads(data)
            request_id = request["id"]
            if len(fds) != 2:
                raise ValueError(f"{len(fds)} file descriptors, not 2")
            sys.stdout.flush()
            sys.stderr.flush()
            pid = _double_fork()
        except Exception as exc:  # reported to the Flow, which raises it
            for fd in fds:
                os.close(fd)
            reply: dict[str, Any] = {"id": request_id, "error": f"{type(exc).__name__}: {exc}"}
        else:
            if pid is None:
                return request, fds
            for fd in fds:
                os.close(fd)
            # sent once the middle process was reaped, so once the Flow adopted this pid
            reply = {"id": request_id, "pid": pid}
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
    # setproctitle names the process (comm: top, pgrep -x, killall) after the command line's
    # first 15 bytes; a fresh start has the executable's name there
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(os.path.basename(sys.executable)[:15])
    os.dup2(stdin_fd, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(stdin_fd)
    os.close(log_fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()  # the C library read TZ in the fork server: a per-executor TZ must apply
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
