"""The processes tests start: finding those a Flow started (none may be left behind), and
`meshflow flow` run as a user runs it, stopped with its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator


def flow_children(parent: int) -> list[int]:
    """Live processes started by the Flow in process ``parent`` (even once orphaned)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"MESHFLOW_PARENT_PID={parent}".encode() in environ and state != "Z":
            found.append(int(entry))
    return found


def stop_group(leader: subprocess.Popen[str], grace: float = 15) -> None:
    """SIGTERM the process group ``leader`` heads, wait until it is gone, SIGKILL what is
    left. The leader is reaped on the way (a zombie still counts as a member of its group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            leader.poll()
            os.killpg(leader.pid, 0)
            time.sleep(0.2)
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


@contextlib.contextmanager
def meshflow_flow(
    *args: str, cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`meshflow flow ARGS` in its own process group, yielded with the lines it printed up to
    "serving gRPC"; the whole group is stopped when the block ends, however it ends."""
    meshflow = os.path.join(os.path.dirname(sys.executable), "meshflow")
    proc = subprocess.Popen(
        [meshflow, "flow", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "serving gRPC" in line:
                break
        assert lines and "serving gRPC" in lines[-1], "".join(lines)
        yield proc, lines
    finally:
        stop_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()
