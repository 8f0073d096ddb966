"""The committed protobuf modules are what proto/generate.py makes from proto/."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_generated_code_is_up_to_date(tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "v1")
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "proto", "generate.py"), out],
        check=True,
        capture_output=True,
        timeout=60,
    )
    committed = os.path.join(ROOT, "meshflow", "proto", "v1")
    fresh = sorted(f for f in os.listdir(out) if not f.startswith("__pycache__"))
    existing = sorted(f for f in os.listdir(committed) if f != "__pycache__")
    assert fresh == existing, "run `make proto` and commit meshflow/proto"
    _, mismatch, errors = filecmp.cmpfiles(out, committed, fresh, shallow=False)
    assert mismatch == [] and errors == [], f"stale: {mismatch + errors}; run `make proto`"
