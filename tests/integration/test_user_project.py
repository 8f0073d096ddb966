"""The CLI from a user's own project folder, with nothing but meshflow installed: no
PYTHONPATH, the user's package next to the Flow YAML (issue 15)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from meshflow import Client, Document

EXECUTOR = """
from meshflow import DocumentArray, Executor, requests


class Shout(Executor):
    @requests
    def shout(self, docs: DocumentArray, **kwargs):
        for doc in docs:
            doc.text = doc.text.upper()
"""

FLOW = """\
jtype: Flow
name: shop
with:
  port: {port}
  mesh: direct
  auth:
    secret_file: jwt.secret
    issuer: https://id.example
    audience: shop
executors:
  - uses: my_pkg.shout:Shout
    name: shout
"""


def run(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "meshflow"), *args],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture
def project(tmp_path: Path, free_port: int) -> Path:
    root = tmp_path / "project"
    (root / "my_pkg").mkdir(parents=True)
    (root / "my_pkg" / "__init__.py").write_text("")
    (root / "my_pkg" / "shout.py").write_text(EXECUTOR)
    (root / "jwt.secret").write_text(os.urandom(32).hex())
    (root / "flow.yml").write_text(FLOW.format(port=free_port))
    return root


@contextlib.contextmanager
def serving(project: Path) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`meshflow flow flow.yml` run in the project folder; yields it and its output so far,
    once serving. Killed at the end, however the block ends."""
    command = [os.path.join(os.path.dirname(sys.executable), "meshflow"), "flow", "flow.yml"]
    proc = subprocess.Popen(
        command,
        cwd=project,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("logs in"):
                break
        assert lines and lines[-1].startswith("logs in"), "".join(lines)
        yield proc, lines
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_cli_finds_the_users_package_without_pythonpath(project: Path, free_port: int) -> None:
    minted = run(project, "token", "--flow", "flow.yml", "--sub", "ana")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    with serving(project) as (proc, lines):
        printed = "".join(lines)
        page = printed.split("a page to try queries: ")[1].split(")")[0]
        # The URL printed opens the page in a browser, /graphql as well as /.
        for url in (page, page + "graphql"):
            answer = httpx.get(url, headers={"accept": "text/html"}, timeout=10)
            assert answer.status_code == 200 and "<title>meshflow GraphQL" in answer.text
        with Client(port=free_port, token=token, timeout=30) as client:
            assert client.post("/", Document(text="hi")).texts == ["HI"]
        # Status from the project folder and from anywhere else.
        here = run(project, "status", "flow.yml")
        assert here.returncode == 0 and "shout" in here.stdout, here.stderr
        elsewhere = run(project.parent, "status", "project/flow.yml")
        assert elsewhere.returncode == 0 and "shout" in elsewhere.stdout, elsewhere.stderr
        by_name = run(project.parent, "status", "--name", "shop")
        assert by_name.returncode == 2
        assert "--workspace" in by_name.stderr and "Traceback" not in by_name.stderr
        named = run(project.parent, "status", "--name", "shop", "--workspace", "project/workspace")
        assert named.returncode == 0 and "shout" in named.stdout, named.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    # The logs outlive the Flow, where it said.
    logs = Path(printed.split("logs in ")[1].split()[0])
    assert (logs / "gateway.log").exists()


def test_token_and_status_never_import_executor_code(project: Path, tmp_path: Path) -> None:
    (project / "my_pkg" / "shout.py").write_text("raise SystemExit('imported')\n")
    minted = run(tmp_path, "token", "--flow", "project/flow.yml", "--sub", "ana")
    assert minted.returncode == 0, minted.stderr
    assert minted.stdout.count(".") == 2
    status = run(tmp_path, "status", "project/flow.yml")
    assert status.returncode == 2
    assert "no running Flow found" in status.stderr and "imported" not in status.stderr


def test_status_of_a_yaml_needs_only_the_variables_it_reads(project: Path) -> None:
    text = (
        (project / "flow.yml").read_text().replace("  mesh: direct\n", "  mesh: ${{ ENV.MESH }}\n")
    )
    (project / "flow.yml").write_text(text)
    status = run(project, "status", "flow.yml")
    assert status.returncode == 2 and "no running Flow found" in status.stderr


def test_version_and_help_are_plain_text(project: Path) -> None:
    version = run(project, "--version")
    assert version.returncode == 0 and version.stdout.startswith("meshflow ")
    helped = run(project, "--help")
    assert helped.returncode == 0 and "``" not in helped.stdout
