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
        ["executor", "--uses", "executors:Append", "--port", "1", "--trace-sampling", "often"],
        ["executor", "--uses", "executors:Append", "--port", "1", "--trace-sampling", "0/s"],
        ["executor", "--uses", "executors:Append", "--port", "1", "--sync-calls", "inline"],
        ["executor", "--uses", "executors:Append", "--port", "1", "--sync-workers", "0"],
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
    waited = meshflow("ping", f"127.0.0.1:{free_port}", "--timeout", "0.2", "--wait", "1")
    assert waited.returncode == 1 and "not serving" in waited.stdout


def test_ping_wait_returns_once_a_starting_server_serves(free_port: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshflow", "executor", "--uses", "executors:Append",
         "--port", str(free_port)],
        env={**os.environ, "PYTHONPATH": TESTS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out = meshflow("ping", f"127.0.0.1:{free_port}", "--wait", "30", timeout=60)
        assert out.returncode == 0 and "SERVING" in out.stdout
    finally:
        proc.kill()
        proc.wait()


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
    env = {"TEST_GATEWAY_PORT": str(free_port)}
    with meshflow_flow(config, "serving gRPC", env) as (proc, line):
        assert f"127.0.0.1:{free_port}" in line
        with Client(port=free_port) as client:
            assert client.post("/", Document(text="hi")).texts == ["hi!"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


@contextlib.contextmanager
def meshflow_flow(
    config: str, wait_for: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run `meshflow flow CONFIG`; yield it and the first output line holding ``wait_for``.
    The process is killed when the block ends, however it ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshflow", "flow", config],
        env={**os.environ, "PYTHONPATH": TESTS, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while line and wait_for not in line:
            line = proc.stdout.readline()
        assert line, f"`meshflow flow` ended before printing {wait_for!r}"
        yield proc, line
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


def test_token_command_mints_what_a_yaml_flow_accepts(tmp_path: object, free_port: int) -> None:
    """The README's path: a secret file, a Flow YAML with auth, `meshflow token`, then a call
    over HTTP (as curl does) and with Client."""
    folder = str(tmp_path)
    secret = os.path.join(folder, "jwt.secret")
    with open(secret, "w", encoding="utf-8") as fh:
        fh.write(os.urandom(32).hex() + "\n")
    config = os.path.join(folder, "flow.yml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(
            "jtype: Flow\n"
            "with:\n"
            f"  port: {free_port}\n"
            "  mesh: direct\n"
            f"  workspace: {folder}/ws\n"
            "  auth:\n"
            "    secret_file: jwt.secret\n"
            "    issuer: https://id.example\n"
            "    audience: shop\n"
            "    scopes: {/search: search:read}\n"
            "executors:\n"
            "  - uses: executors:Guarded\n"
            "    name: guarded\n"
        )
    minted = meshflow(
        "token", "--flow", config, "--sub", "alice", "--scope", "search:read", "--ttl", "1h",
        "--claim", "tenant=acme",
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert token.count(".") == 2
    with_file = meshflow(
        "token", "--secret-file", secret, "--sub", "bob", "--iss", "https://id.example",
        "--aud", "shop", "--scope", "search:read",
    )  # fmt: skip
    assert with_file.returncode == 0, with_file.stderr
    with meshflow_flow(config, "GraphQL on") as (proc, line):
        url = line[line.index("http://") :].split()[0]
        import httpx

        base = url.rsplit("/", 1)[0]
        body = {"on": "/search", "docs": [{"text": "hi"}]}
        refused = httpx.post(f"{base}/post", json=body, timeout=30)
        assert refused.status_code == 401
        answer = httpx.post(
            f"{base}/post", json=body, headers={"authorization": f"Bearer {token}"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"]["guarded"]["tenant"] == "acme"
        with Client(port=free_port, token=with_file.stdout.strip()) as client:
            assert client.send("/search")[0].results["guarded"]["subject"] == "bob"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "--sub", "a"], "give --secret-file, --secret-env or --key-file"),
        (["token", "--sub", "a", "--secret-env", "MESHFLOW_NOT_SET"], "MESHFLOW_NOT_SET"),
        (["token", "--sub", "a", "--secret-file", "/nonexistent"], "cannot read"),
        (["token", "--sub", "a", "--secret-file", __file__, "--ttl", "soon"], "ttl 'soon'"),
        (["token", "--sub", "a", "--key-file", __file__], "not an unencrypted PEM private key"),
        (["token", "--secret-file", __file__], "--sub"),
    ],
)
def test_token_command_bad_input_exits_2(args: list[str], message: str) -> None:
    out = meshflow(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_a_client_pointed_at_an_executor_is_told_it_needs_a_gateway(free_port: int) -> None:
    from meshflow.errors import RequestError

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
        env={**os.environ, "PYTHONPATH": TESTS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while meshflow("ping", f"127.0.0.1:{free_port}", "--timeout", "0.5").returncode != 0:
            assert time.monotonic() < deadline, "executor never became healthy"
            time.sleep(0.1)
        with (
            Client(port=free_port, timeout=10) as client,
            pytest.raises(RequestError, match="not a Flow's gateway"),
        ):
            client.post("/", Document(text="a"))
    finally:
        proc.kill()
        proc.wait()


def test_async_client_names_the_protocols_it_speaks() -> None:
    from meshflow import AsyncClient
    from meshflow.errors import ConfigError

    with pytest.raises(
        ConfigError, match=r"AsyncClient.*\('grpc',\).*Client\(protocol='graphql'\)"
    ):
        AsyncClient(port=1, protocol="graphql")
