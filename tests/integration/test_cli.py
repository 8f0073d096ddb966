"""The meshflow command: bad arguments exit 2 with one line; serving and pinging work."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
from procs import flow_children

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


def test_sigterm_lets_the_request_in_flight_finish(free_port: int) -> None:
    import grpc

    from meshflow.client.messages import build_request, read_response
    from meshflow.wire import EXECUTOR_PROCESS

    env = {**os.environ, "PYTHONPATH": TESTS}
    cmd = [sys.executable, "-m", "meshflow", "executor", "--uses", "executors:Slow"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(free_port), "--name", "slow"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while meshflow("ping", f"127.0.0.1:{free_port}", "--timeout", "0.5").returncode != 0:
            assert time.monotonic() < deadline, "executor never became healthy"
            time.sleep(0.1)
        _, data = build_request("/sleep", [Document()], parameters={"seconds": 1.0})
        with grpc.insecure_channel(f"127.0.0.1:{free_port}") as channel:
            future = channel.unary_unary(EXECUTOR_PROCESS).future(data, timeout=10)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            answer = read_response(future.result())
        assert len(answer.docs) == 1
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def flow_script(tmp_path: object, flow: str) -> Iterator[subprocess.Popen[str]]:
    """Run a script that serves ``flow`` with f.block(); yields once it printed 'ready'."""
    script = os.path.join(str(tmp_path), "serve.py")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(
            "import os\n"
            "from meshflow import Flow\n"
            f"f = {flow}\n"
            "with f:\n"
            "    address = f.describe()['deployments'][0]['replicas'][0]['executor']['address']\n"
            "    print('ready', os.path.dirname(address[5:]), flush=True)\n"
            "    f.block()\n"
        )
    env = {**os.environ, "PYTHONPATH": TESTS}
    proc = subprocess.Popen(
        [sys.executable, script], env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, text=True
    )
    run_dir = ""
    try:
        assert proc.stdout is not None
        word, run_dir = proc.stdout.readline().split()
        assert word == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if run_dir.startswith(tempfile.gettempdir()):
            # A Flow killed with SIGKILL cannot remove its run directory itself.
            shutil.rmtree(run_dir, ignore_errors=True)


def test_ctrl_c_on_a_flow_script_leaves_no_process_behind(tmp_path: object) -> None:
    flow = "Flow().add(uses='executors:Append', replicas=2).add(uses='executors:Who')"
    with flow_script(tmp_path, flow) as proc:
        # 3 executors, the gateway, and an Envoy sidecar for each of them
        assert len(flow_children(proc.pid)) == 8
        time.sleep(0.5)  # let the script enter f.block()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert flow_children(proc.pid) == []


def test_children_exit_when_the_flow_process_is_killed(tmp_path: object) -> None:
    with flow_script(tmp_path, "Flow().add(uses='executors:Append')") as proc:
        assert len(flow_children(proc.pid)) == 4  # executor, gateway and their sidecars
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while flow_children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert flow_children(proc.pid) == []
