"""Finding the processes a Flow started, to check that none is left behind."""

from __future__ import annotations

import os


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
