"""The Envoy mesh: generated configs, mTLS, fail-over, restarts, scaling, introspection."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from meshflow import (
    CircuitBreaker,
    ConfigError,
    Document,
    DocumentArray,
    Flow,
    FlowStartError,
    HealthCheck,
    OutlierDetection,
    RetryPolicy,
)
from meshflow.mesh.certs import FlowCA
from meshflow.mesh.sidecar import admin_get, envoy_binary, validate

StartFlow = Callable[[Flow], Flow]
pytestmark = pytest.mark.mesh("envoy")


def stat_value(admin: str, name: str) -> int:
    _, body = admin_get(admin, f"/stats?filter={name}")
    return sum(int(line.rsplit(":", 1)[1]) for line in body.splitlines() if ":" in line)


def test_every_generated_envoy_config_passes_envoy_validate(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(
            uses="executors:Append",
            name="a",
            replicas=2,
            lb="round_robin",
            retries=RetryPolicy(attempts=2, per_try_timeout=1.5),
            health_check=HealthCheck(interval=0.5),
            outlier_detection=OutlierDetection(consecutive_failures=2),
            circuit_breaker=CircuitBreaker(max_requests=64),
            timeout=5,
        )
        .add(uses="executors:MemoryIndex", name="b", shards=2, polling="ALL")
    )
    status = f.describe()
    configs = [status["gateway"]["sidecar"]["config"]] + [
        r["sidecar"]["config"] for d in status["deployments"] for r in d["replicas"]
    ]
    assert len(configs) == 5
    for path in configs:
        validate(path)
    with open(configs[0], encoding="utf-8") as fh:
        gateway = fh.read()
    for expected in ("ROUND_ROBIN", "previous_hosts", "no_traffic_interval", "max_requests: 64"):
        assert expected in gateway


def test_describe_lists_every_process_and_its_health(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append", name="a", replicas=2, shards=2))
    status = f.describe()
    assert status["mesh"] == "envoy" and status["gateway"]["serving"]
    assert status["gateway"]["sidecar"]["ready"]
    [dep] = status["deployments"]
    assert [(r["shard"], r["replica"]) for r in dep["replicas"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in dep["replicas"]:
        assert r["healthy"] and r["executor"]["serving"] and r["sidecar"]["ready"]
        # The mTLS listener is a unix socket only the Flow's user can open.
        assert stat.S_IMODE(os.stat(r["sidecar"]["listener"]).st_mode) == 0o600
        assert r["sidecar"]["admin"].endswith(".sock") and not r["sidecar"]["listeners_stopped"]
        assert r["executor"]["address"].startswith("unix:")


def test_status_command_prints_a_running_flow(start_flow: StartFlow, workspace: str) -> None:
    f = start_flow(Flow(name="shown").add(uses="executors:Append", name="appender"))
    out = subprocess.run(
        [sys.executable, "-m", "meshflow", "status", "--name", "shown", "--workspace", workspace],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert f"gateway 127.0.0.1:{f.port}" in out.stdout
    assert "appender" in out.stdout and "healthy" in out.stdout


def test_status_command_without_a_running_flow_exits_2(workspace: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meshflow", "status", "--name", "nope", "--workspace", workspace],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "no running Flow" in out.stderr


def test_executor_is_reachable_only_through_its_sidecar(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append", name="a"))
    [replica] = f.describe()["deployments"][0]["replicas"]
    path = replica["executor"]["address"].removeprefix("unix:")
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


# -- the sidecars' admin ------------------------------------------------------------------


def _sidecars(status: dict[str, object]) -> list[dict[str, object]]:
    gateway = status["gateway"]["sidecar"]  # type: ignore[index]
    return [gateway] + [
        r["sidecar"]
        for d in status["deployments"]  # type: ignore[attr-defined]
        for r in d["replicas"]
    ]


def test_sidecar_admin_is_a_0600_socket_in_a_0700_folder(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append", name="a"))
    for sidecar in _sidecars(f.describe()):
        path = str(sidecar["admin"])
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        folder = os.path.dirname(path)
        while folder != os.path.dirname(folder):  # a 0700 folder on the way shuts others out
            if stat.S_IMODE(os.stat(folder).st_mode) == 0o700:
                break
            folder = os.path.dirname(folder)
        else:
            pytest.fail(f"no 0700 folder above {path}")


def _http(port: int, method: str, path: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        return conn.getresponse().status
    finally:
        conn.close()


def _tcp_ports(pid: int) -> set[int]:
    """The loopback TCP ports process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_drain_listeners_is_impossible_over_tcp(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append", name="a"))
    status = f.describe()
    for sidecar in _sidecars(status):
        stats_port = int(str(sidecar["metrics"]).split(":")[2].split("/")[0])
        # Envoy listens on TCP on its stats port, nothing else (mTLS ingress: a unix socket).
        assert _tcp_ports(int(sidecar["pid"])) == {stats_port}  # type: ignore[call-overload]
        for method, path in [
            ("POST", "/drain_listeners"),
            ("POST", "/quitquitquit"),
            ("POST", "/runtime_modify?x=1"),
            ("GET", "/config_dump"),
            ("POST", "/stats/prometheus"),
        ]:
            assert _http(stats_port, method, path) == 404, (method, path)
        assert _http(stats_port, "GET", "/ready") == 200
    time.sleep(0.5)  # a drain, had one been taken, stops listeners within this
    [doc] = f.post("/", DocumentArray.empty(1))
    assert doc.text == "x"
    assert all(not s["listeners_stopped"] for s in _sidecars(f.describe()))


def test_sidecar_stats_are_still_scraped_over_http(start_flow: StartFlow) -> None:
    import urllib.request

    f = start_flow(Flow().add(uses="executors:Append", name="a"))
    f.post("/", DocumentArray.empty(1))
    targets = [t for t in f.describe()["scrape_targets"] if t["component"] == "sidecar"]
    assert len(targets) == 2
    for target in targets:
        with urllib.request.urlopen(target["url"], timeout=5) as answer:
            body = answer.read().decode()
        assert "# TYPE envoy_" in body and "envoy_server_live" in body


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_reach_the_admin(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append", name="a"))
    admin = str(f.describe()["gateway"]["sidecar"]["admin"])
    pid = os.fork()
    if pid == 0:  # the child becomes nobody and tries to drain the gateway's sidecar
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(admin)
                sock.sendall(b"POST /drain_listeners HTTP/1.0\r\n\r\n")
                code = 0
        except PermissionError:
            code = 13
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 13
    assert f.describe()["gateway"]["sidecar"]["listeners_stopped"] == 0


def test_describe_shows_a_drained_sidecar_as_not_serving(start_flow: StartFlow) -> None:
    from meshflow.mesh.admin import admin_request

    f = start_flow(Flow().add(uses="executors:Append", name="a"))
    admin = str(f.describe()["gateway"]["sidecar"]["admin"])
    # The Flow's own user still can (the socket is theirs): describe() must then tell.
    assert admin_request(admin, "/drain_listeners", method="POST")[0] == 200
    status = f.describe()
    sidecar = status["gateway"]["sidecar"]
    assert sidecar["listeners_stopped"] >= 1 and not sidecar["ready"]
    assert not status["gateway"]["serving"]


# -- mTLS ----------------------------------------------------------------------------------


@pytest.fixture
def guarded(start_flow: StartFlow, workspace: str, tmp_path: object) -> Iterator[dict[str, str]]:
    f = start_flow(
        Flow(name="guarded")
        .add(uses="executors:Append", name="a")
        .add(uses="executors:Append", name="b")
    )
    [replica] = f.describe()["deployments"][0]["replicas"]
    # The Flow's CA lives in its memory only; its certificates are in the run folder.
    pki = os.path.join(os.path.dirname(f.describe()["gateway"]["sidecar"]["config"]), "pki")
    other = FlowCA(os.path.join(str(tmp_path), "other-ca"), "guarded")
    yield {
        "listener": replica["sidecar"]["listener"],
        "admin": replica["sidecar"]["admin"],
        "gateway_cert": os.path.join(pki, "gateway.crt"),
        "gateway_key": os.path.join(pki, "gateway.key"),
        # A certificate of the same CA, but another workload's (deployment b's).
        "intruder_cert": os.path.join(pki, "b.crt"),
        "intruder_key": os.path.join(pki, "b.key"),
        "foreign_cert": other.identity("gateway").cert,
        "foreign_key": other.identity("gateway").key,
    }


def h2_exchange(listener: str, cert: str | None, key: str | None) -> bytes:
    """TLS to the sidecar's ``host:port`` or unix socket (not checking its certificate: the
    server's side is under test), then the HTTP/2 preface; returns what the server sends back
    (b'' if it hangs up)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if cert and key:
        context.load_cert_chain(cert, key)
    if listener.startswith("/"):  # a listener of the Flow's one Envoy (envoy_proxy='host')
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(5)
        raw.connect(listener)
    else:
        host, port = listener.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=5)
    with raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                )
                return tls.recv(1024)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return b""


def test_sidecar_accepts_the_gateway_identity(guarded: dict[str, str]) -> None:
    answer = h2_exchange(guarded["listener"], guarded["gateway_cert"], guarded["gateway_key"])
    assert answer[3:4] == b"\x04"  # the server's SETTINGS frame


def test_sidecar_refuses_a_client_without_certificate(guarded: dict[str, str]) -> None:
    assert h2_exchange(guarded["listener"], None, None) == b""
    assert stat_value(guarded["admin"], "ssl.fail_verify_no_cert") >= 1


def test_sidecar_refuses_a_certificate_of_another_ca(guarded: dict[str, str]) -> None:
    assert h2_exchange(guarded["listener"], guarded["foreign_cert"], guarded["foreign_key"]) == b""
    assert stat_value(guarded["admin"], "ssl.fail_verify_error") >= 1


def test_sidecar_refuses_the_wrong_identity(guarded: dict[str, str]) -> None:
    assert (
        h2_exchange(guarded["listener"], guarded["intruder_cert"], guarded["intruder_key"]) == b""
    )
    assert stat_value(guarded["admin"], "ssl.fail_verify_san") >= 1


# -- fail-over, restarts, scaling ------------------------------------------------------------


class Traffic:
    """Sends 1-doc requests from a thread until stopped; records answers and failures."""

    def __init__(self, flow: Flow, seconds: float = 0.02) -> None:
        self.flow = flow
        self.seconds = seconds
        self.pids: list[int] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                [doc] = self.flow.client.post(
                    "/", DocumentArray.empty(1), parameters={"seconds": self.seconds}, timeout=20
                )
                self.pids.append(int(doc.tags["pid"]))
            except BaseException as exc:  # collected for the test to assert on
                self.errors.append(exc)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def replica_pids(f: Flow) -> list[int]:
    return [r["executor"]["pid"] for r in f.describe()["deployments"][0]["replicas"]]


def wait_for(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_replica_killed_mid_stream_loses_no_request_and_comes_back(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Work", name="w", replicas=3))
    victim = replica_pids(f)[1]
    with Traffic(f) as traffic:
        wait_for(lambda: len(traffic.pids) > 30)
        os.kill(victim, signal.SIGKILL)
        served_before_kill = len(traffic.pids)
        # The dead replica is ejected and, once restarted and healthy, serves again.
        wait_for(
            lambda: (
                victim not in replica_pids(f)
                and all(r["healthy"] for r in f.describe()["deployments"][0]["replicas"])
            )
        )
        reborn = replica_pids(f)[1]
        wait_for(lambda: reborn in traffic.pids[served_before_kill:])
    assert traffic.errors == []
    assert len(set(traffic.pids)) == 4  # three replicas, one of them twice
    admin = f.describe()["gateway"]["sidecar"]["admin"]
    # The gateway's Envoy saw the dead replica (its sidecar answered 503s for it) and sent the
    # calls elsewhere: retried on another replica, and ejected when the replica stayed down
    # for enough consecutive failures (a replica restarted within a few calls is not), or
    # marked unhealthy by a health check that fell in the gap.
    seen = sum(
        stat_value(admin, f"^cluster[.]w_shard0[.]{name}$")
        for name in (
            "upstream_rq_retry",
            "outlier_detection[.]ejections_enforced_total",
            "health_check[.]failure",
        )
    )
    assert seen >= 1
    [(restarted,)] = [
        (r["executor"]["restarts"],)
        for r in f.describe()["deployments"][0]["replicas"]
        if r["replica"] == 1
    ]
    assert restarted == 1


def test_replica_sidecar_killed_is_restarted_and_no_request_fails(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Work", name="w", replicas=2))
    victim = f.describe()["deployments"][0]["replicas"][0]["sidecar"]["pid"]
    with Traffic(f) as traffic:
        wait_for(lambda: len(traffic.pids) > 20)
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: all(
                r["healthy"] and r["sidecar"]["pid"] != victim
                for r in f.describe()["deployments"][0]["replicas"]
            )
        )
        count = len(traffic.pids)
        wait_for(lambda: set(traffic.pids[count:]) == set(replica_pids(f)))
    assert traffic.errors == []
    assert f.describe()["deployments"][0]["replicas"][0]["sidecar"]["restarts"] == 1


def scale_up_and_down_under_traffic(f: Flow) -> None:
    """Deployment ``w`` scaled 1 -> 3 -> 1 while requests flow: the new replicas take calls,
    only the remaining one does after, and no request fails."""
    with Traffic(f) as traffic:
        wait_for(lambda: len(traffic.pids) > 10)
        f.scale("w", replicas=3)
        assert len(replica_pids(f)) == 3
        wait_for(lambda: set(replica_pids(f)) <= set(traffic.pids))
        f.scale("w", replicas=1)
        remaining = replica_pids(f)
        count = len(traffic.pids)
        wait_for(lambda: len(traffic.pids) > count + 20)
        assert set(traffic.pids[count:]) == set(remaining)
    assert traffic.errors == []


def test_scaling_up_and_down_fails_no_request(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Work", name="w"))
    gateway_sidecar = f.describe()["gateway"]["sidecar"]["pid"]
    scale_up_and_down_under_traffic(f)
    assert f.deployment("w").replicas == 1
    assert f.describe()["gateway"]["sidecar"]["pid"] == gateway_sidecar  # never restarted


def test_scale_needs_the_envoy_mesh(workspace: str) -> None:
    f = Flow(mesh="direct", workspace=workspace).add(uses="executors:Work", name="w")
    with f, pytest.raises(ConfigError, match="mesh='envoy'"):
        f.scale("w", replicas=2)


def test_envoy_failing_to_start_shows_config_and_log(workspace: str, tmp_path: object) -> None:
    wrapper = os.path.join(str(tmp_path), "envoy-with-bad-flag")
    with open(wrapper, "w", encoding="utf-8") as fh:
        fh.write(f'#!/bin/sh\nexec {envoy_binary()} "$@" --component-log-level nosuch:debug\n')
    os.chmod(wrapper, 0o755)
    f = Flow(workspace=workspace).add(uses="executors:Append")
    os.environ["MESHFLOW_ENVOY_BIN"] = wrapper
    try:
        with pytest.raises(FlowStartError) as info:
            f.start()
    finally:
        del os.environ["MESHFLOW_ENVOY_BIN"]
    message = str(info.value)
    assert "sidecar" in message and ".envoy.yaml" in message
    assert "nosuch" in info.value.log_tail
    assert f.pids == {}


def test_envoy_concurrency_is_configurable(start_flow: StartFlow) -> None:
    f = start_flow(Flow(envoy_concurrency=2).add(uses="executors:Append", name="a"))
    pid = f.describe()["deployments"][0]["replicas"][0]["sidecar"]["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        args = fh.read().split(b"\0")
    assert args[args.index(b"--concurrency") + 1] == b"2"
    assert f.post("/", DocumentArray.empty(1)).texts == ["x"]


def test_new_replicas_take_traffic_as_soon_as_scale_returns(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Who", name="w"))
    f.scale("w", replicas=3)
    # No sleep: scale() returns once the gateway's sidecar routes to every new replica.
    answered = {int(f.post("/", Document(text="a"))[0].tags["replica"]) for _ in range(60)}
    assert answered == {0, 1, 2}


# -- one Envoy for the Flow (envoy_proxy='host') -----------------------------------------------


def hosted(**options: object) -> Flow:
    return Flow(name="hosted", envoy_proxy="host", **options)


def test_one_envoy_serves_every_replica_and_shard(start_flow: StartFlow) -> None:
    f = start_flow(
        hosted(metrics=True)
        .add(uses="executors:Work", name="w", replicas=2)
        .add(uses="executors:Append", name="b", shards=2)
    )
    assert [name for name in f.pids if "Envoy" in name or "sidecar" in name] == ["the Flow's Envoy"]
    with Traffic(f) as traffic:
        wait_for(lambda: set(replica_pids(f)) <= set(traffic.pids))
    assert traffic.errors == []
    described = f.describe()
    host = described["gateway"]["sidecar"]
    validate(host["config"])
    for dep in described["deployments"]:
        for r in dep["replicas"]:
            assert r["healthy"], r
            assert r["sidecar"]["shared"] and r["sidecar"]["pid"] == host["pid"]
            assert stat.S_IMODE(os.stat(r["sidecar"]["listener"]).st_mode) == 0o600
    envoy_targets = [t for t in described["scrape_targets"] if t["component"] == "sidecar"]
    assert [t["deployment"] for t in envoy_targets] == ["gateway"]  # the one Envoy, once


def test_one_envoy_keeps_mtls_on_every_replica_listener(start_flow: StartFlow) -> None:
    f = start_flow(
        hosted().add(uses="executors:Append", name="a").add(uses="executors:Append", name="b")
    )
    described = f.describe()
    listener = described["deployments"][0]["replicas"][0]["sidecar"]["listener"]
    admin = described["gateway"]["sidecar"]["admin"]
    pki = os.path.join(os.path.dirname(described["gateway"]["sidecar"]["config"]), "pki")
    gateway = os.path.join(pki, "gateway.crt"), os.path.join(pki, "gateway.key")
    intruder = os.path.join(pki, "b.crt"), os.path.join(pki, "b.key")  # b's identity, not a's
    assert h2_exchange(listener, *gateway)[3:4] == b"\x04"  # the server's SETTINGS frame
    assert h2_exchange(listener, None, None) == b""
    assert h2_exchange(listener, *intruder) == b""
    assert stat_value(admin, "ssl.fail_verify_no_cert") >= 1
    assert stat_value(admin, "ssl.fail_verify_san") >= 1


def test_the_flows_envoy_killed_is_restarted_on_the_same_sockets(start_flow: StartFlow) -> None:
    f = start_flow(hosted().add(uses="executors:Work", name="w", replicas=2))
    before = f.describe()
    victim = before["gateway"]["sidecar"]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: (
            f.describe()["gateway"]["sidecar"]["pid"] != victim
            and all(r["healthy"] for r in f.describe()["deployments"][0]["replicas"])
        )
    )
    with Traffic(f) as traffic:
        wait_for(lambda: set(replica_pids(f)) <= set(traffic.pids))
    assert traffic.errors == []
    after = f.describe()
    assert after["gateway"]["sidecar"]["restarts"] == 1
    listeners = [
        [r["sidecar"]["listener"] for r in d["deployments"][0]["replicas"]] for d in (before, after)
    ]
    assert listeners[0] == listeners[1]


def test_one_envoy_scales_up_and_down_and_fails_no_request(start_flow: StartFlow) -> None:
    f = start_flow(hosted().add(uses="executors:Work", name="w"))
    envoy = f.describe()["gateway"]["sidecar"]["pid"]
    scale_up_and_down_under_traffic(f)
    described = f.describe()
    assert described["gateway"]["sidecar"]["pid"] == envoy  # listeners came and went live
    [replica] = described["deployments"][0]["replicas"]
    assert replica["healthy"]
    admin = described["gateway"]["sidecar"]["admin"]
    listeners = {line.split("::")[0] for line in admin_get(admin, "/listeners")[1].splitlines()}
    assert listeners == {"egress", "stats", "ingress w-s0-r0"}  # the others' listeners went
    f.scale("w", replicas=2)  # a replica label comes back while its old listener drains
    assert all(r["healthy"] for r in f.describe()["deployments"][0]["replicas"])
    assert len(f.post("/", DocumentArray.empty(4))) == 4


def test_envoy_proxy_is_checked() -> None:
    with pytest.raises(ConfigError, match="envoy_proxy must be one of"):
        Flow(envoy_proxy="node")
    with pytest.raises(ConfigError, match="envoy_proxy='host' needs mesh='envoy'"):
        Flow(mesh="direct", envoy_proxy="host")
