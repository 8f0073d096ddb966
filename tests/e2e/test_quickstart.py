"""The quickstart program (`make quickstart`) runs end to end and prints sensible search results."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quickstart_indexes_searches_and_prints_results(tmp_path: object) -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    out = subprocess.run(
        [sys.executable, "-m", "services.quickstart"],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("indexed 16 items") for line in lines)
    first_hits = [lines[i + 2] for i, line in enumerate(lines) if line.startswith("query:")]
    assert "red cotton summer dress" in first_hits[0]
    assert "leather sneakers" in first_hits[1]
    assert "winter coat" in first_hits[2]
    assert "(categories ['dresses'])" in out.stdout
