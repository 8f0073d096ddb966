"""The meshflow command: bad arguments exit 2 with one line; serving and pinging work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from meshflow import Client, Document

TESTS = os.path.dirname(os.path.abspath(__file__))


def meshflow(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": TESTS}
    return subprocess.run(
        [sys.executable, "-m", "meshflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nonsense"],
        ["executor", "--port", "1"],
        ["executor", "--uses", "executors:Append", "--port", "x"],
        ["executor", "--uses", "executors:Append", "--port", "1", "--uses-with", "[1]"],
        ["ping", "no-port-here"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str]) -> None:
    out = meshflow(*args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("meshflow")
    assert "Traceback" not in out.stderr


def test_executor_with_unknown_class_exits_2() -> None:
    out = meshflow("executor", "--uses", "executors:Nope", "--port", "1")
    assert out.returncode == 2
    assert "has no attribute 'Nope'" in out.stderr
    assert "Traceback" not in out.stderr


def test_ping_exits_1_when_nothing_serves(free_port: int) -> None:
    out = meshflow("ping", f"127.0.0.1:{free_port}", "--timeout", "0.5")
    assert out.returncode == 1


def test_executor_serves_health_and_drains_on_sigterm(free_port: int) -> None:
    env = {**os.environ, "PYTHONPATH": TESTS}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshflow",
            "executor",
            "--uses",
            "executors:Append",
            "--port",
            str(free_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if meshflow("ping", f"127.0.0.1:{free_port}", "--timeout", "0.5").returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("executor never became healthy")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout is not None
        assert "draining" in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_flow_command_serves_a_yaml_flow(tmp_path: object, free_port: int) -> None:
    config = os.path.join(str(tmp_path), "flow.yml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(
            "jtype: Flow\n"
            "with:\n"
            "  port: ${{ ENV.TEST_GATEWAY_PORT }}\n"
            f"  workspace: {tmp_path}/ws\n"
            "executors:\n"
            "  - uses: executors:Append\n"
            "    uses_with: {suffix: '!'}\n"
        )
    env = {**os.environ, "PYTHONPATH": TESTS, "TEST_GATEWAY_PORT": str(free_port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshflow", "flow", config],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while line and "serving gRPC" not in line:
            line = proc.stdout.readline()
        assert f"127.0.0.1:{free_port}" in line
        with Client(port=free_port) as client:
            assert client.post("/", Document(text="hi")).texts == ["hi!"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
