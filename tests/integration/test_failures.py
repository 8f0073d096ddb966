"""Bad input and failures: each gets a clear error, and the Flow keeps serving."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from procs import flow_children

from meshflow import (
    BadRequestError,
    Client,
    ConfigError,
    DeadlineExceeded,
    Document,
    DocumentArray,
    ExecutorError,
    Flow,
    FlowStartError,
    RequestError,
)
from meshflow.client.messages import build_request, read_response
from meshflow.wire import GATEWAY_POST

StartFlow = Callable[[Flow], Flow]


def test_unknown_module_in_uses_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no module named 'no_such_module'"):
        Flow().add(uses="no_such_module:Exec")


def test_unknown_class_in_uses_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        Flow().add(uses="executors:Nope")


def test_class_that_is_not_an_executor_is_refused() -> None:
    with pytest.raises(ConfigError, match="not an Executor subclass"):
        Flow().add(uses="executors:NotAnExecutor")
    with pytest.raises(ConfigError, match="not an Executor subclass"):
        Flow().add(uses=dict)


def test_unknown_name_in_needs_is_refused() -> None:
    f = Flow().add(uses="executors:Append", name="a").add(uses="executors:Append", needs="zz")
    with pytest.raises(ConfigError, match="needs unknown deployment 'zz'"):
        f.start()


def test_cycle_in_needs_is_refused() -> None:
    f = (
        Flow()
        .add(uses="executors:Append", name="a", needs="b")
        .add(uses="executors:Append", name="b", needs="a")
    )
    with pytest.raises(ConfigError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        f.check()


def test_port_in_use_is_refused_before_starting_anything() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        f = Flow(port=port).add(uses="executors:Append")
        with pytest.raises(ConfigError, match=f"port={port}: the port is already in use"):
            f.start()
        assert f.pids == {}
        g = Flow(graphql_port=port).add(uses="executors:Append")
        with pytest.raises(ConfigError, match=f"graphql_port={port}: the port is already in use"):
            g.start()
        assert g.pids == {}


def test_tracing_without_a_collector_warns_at_start_and_exits_promptly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        nowhere = sock.getsockname()[1]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{nowhere}")
    f = Flow(tracing=True, mesh="direct", log_dir=str(tmp_path)).add(uses="executors:Append")
    with caplog.at_level("WARNING", logger="meshflow.tracing"), f:
        f.post("/", Document(text="a"))
        leaving = time.monotonic()
    # Before: the exporters' retries held the exit for 11.5 s, silently.
    assert time.monotonic() - leaving < 8
    assert "no collector answers" in caplog.text
    assert "dropped" in (tmp_path / "gateway.log").read_text()


def test_executor_failing_in_init_names_it_with_its_log(workspace: str) -> None:
    f = Flow(workspace=workspace).add(uses="executors:BrokenInit", name="model")
    with pytest.raises(FlowStartError) as info:
        f.start()
    assert "executor 'model'" in str(info.value)
    assert "model file missing" in str(info.value)
    assert "RuntimeError" in info.value.log_tail
    assert f.pids == {}
    assert flow_children(os.getpid()) == []


def test_bad_uses_with_is_a_config_error_from_the_process(workspace: str) -> None:
    f = Flow(workspace=workspace).add(uses="executors:Append", uses_with={"nope": 1})
    with pytest.raises(ConfigError, match="unexpected uses_with argument"):
        f.start()


@pytest.mark.mesh("direct")
def test_executor_dying_mid_request_fails_that_request_only(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Crash", name="fragile", replicas=2))
    assert len(f.post("/ok", DocumentArray.empty(1))) == 1
    with pytest.raises(ExecutorError) as info:
        f.post("/crash", DocumentArray.empty(1))
    assert info.value.executor == "fragile"
    # The surviving replica keeps serving, and so does the gateway.
    for _ in range(5):
        assert len(f.post("/ok", DocumentArray.empty(1))) == 1


def test_timeout_becomes_deadline_and_stops_downstream_work(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Slow", name="slow"))
    with pytest.raises(DeadlineExceeded):
        f.post("/sleep", DocumentArray.empty(1), parameters={"seconds": 2}, timeout=0.3)
    time.sleep(2.2)
    [stats] = f.post("/stats", return_responses=True)
    # The call was cancelled in the executor: the sleep started but never finished.
    assert stats.results["slow"] == {"started": 1.0, "finished": 0.0}


def test_deployment_timeout_bounds_each_hop(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Slow", name="slow", timeout=0.2))
    with pytest.raises(ExecutorError, match="slow"):
        f.post("/sleep", DocumentArray.empty(1), parameters={"seconds": 1})


def test_malformed_request_is_invalid_argument(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append"))
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as channel:
        post = channel.unary_unary(GATEWAY_POST)
        with pytest.raises(grpc.RpcError) as info:
            post(b"\xff\xff\xff\xff garbage", timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Valid framing, broken document inside: the executor refuses it.
        with pytest.raises(grpc.RpcError) as info:
            post(b"\x1a\x03\x0a\x05a", timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f.post("/", DocumentArray.empty(1)).texts == ["x"]


def test_oversized_request_is_resource_exhausted(start_flow: StartFlow) -> None:
    f = start_flow(Flow(max_request_bytes=64 * 1024).add(uses="executors:Append"))
    from meshflow import Document

    big = DocumentArray([Document(blob=b"x" * 100_000)])
    with pytest.raises(BadRequestError, match="larger than"):
        f.post("/", big)
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary(GATEWAY_POST)(b"\x00" * 100_000, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f.post("/", DocumentArray.empty(1)).texts == ["x"]


@pytest.mark.mesh("direct")
def test_streams_cancelled_mid_way_give_back_every_slot(start_flow: StartFlow) -> None:
    f = start_flow(Flow(max_in_flight=3).add(uses="executors:Slow"))
    with Client(port=f.port, max_in_flight=3) as client:
        for _ in range(15):
            answers = client.stream_raw(
                build_request("/sleep", [], parameters={"seconds": 0.05 * (i % 3)})
                for i in range(30)
            )
            next(answers)  # one answer, then the stream is cancelled with requests in flight
            answers.close()
    # Every slot came back: max_in_flight requests at once are all served, none shed.
    with ThreadPoolExecutor(3) as pool:
        done = list(
            pool.map(
                lambda _: f.client.post(
                    "/sleep", DocumentArray.empty(1), parameters={"seconds": 0.5}
                ),
                range(3),
            )
        )
    assert [len(d) for d in done] == [1, 1, 1]


@pytest.mark.mesh("direct")
def test_a_stream_ends_when_its_executor_crashes_mid_way(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Crash", name="fragile"))
    ons = ["/ok", "/ok", "/crash", "/ok", "/ok", "/ok"]
    with Client(port=f.port, max_in_flight=4, timeout=30) as client:
        answers = list(client.stream_raw(build_request(on, []) for on in ons))
    assert len(answers) == len(ons)  # every request answered, none dropped
    failures = 0
    for raw in answers:
        try:
            read_response(raw)
        except RequestError as exc:
            failures += 1
            assert "fragile" in str(exc)
    assert failures >= 1
