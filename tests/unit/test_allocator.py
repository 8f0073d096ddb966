"""meshflow's executor and gateway processes keep large buffers on the heap (glibc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import sys
from meshflow.cli.run import tune_allocator

def heap() -> int:
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = line.split()[0].split("-")
            return int(end, 16) - int(start, 16)
    return 0

tuned = tune_allocator()
before = heap()
block = bytearray(2 << 20)  # a 2 MiB buffer, as a large request's arrays
grown = heap() - before
print(tuned, grown >= 1 << 20)  # (the top of the heap may have had some room)
"""

linux_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's mallopt",
)


def _probe(env: dict[str, str]) -> tuple[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    tuned, on_heap = out.stdout.split()
    return tuned, on_heap


@linux_glibc
def test_a_large_buffer_comes_from_the_heap() -> None:
    assert _probe({}) == ("True", "True")


@linux_glibc
def test_glibcs_own_variables_win() -> None:
    # The operator's setting stands: 128 KiB, so the 2 MiB buffer is mapped on its own.
    assert _probe({"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}) == ("False", "False")
