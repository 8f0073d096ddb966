"""Sync endpoint methods in a real executor process: short calls on the event loop (or in
the threads with ``--sync-calls thread``); a method that blocks moves to the threads and the
executor keeps answering health checks and async calls while it blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshflow import Document
from meshflow.client.messages import build_request, read_response
from meshflow.wire import EXECUTOR_PROCESS

TESTS = os.path.dirname(os.path.abspath(__file__))


def start(port: int, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "meshflow", "executor", "--uses", "executors:Blocking"]
    return subprocess.Popen(
        [*cmd, "--port", str(port), "--name", "blocking", *extra],
        env={**os.environ, "PYTHONPATH": TESTS},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def channel_to(free_port: int) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def connect(*extra: str) -> grpc.Channel:
        procs.append(start(free_port, *extra))
        channel = grpc.insecure_channel(f"127.0.0.1:{free_port}")
        channels.append(channel)
        grpc.channel_ready_future(channel).result(timeout=30)
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return channel
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the executor never became healthy"
                time.sleep(0.1)

    channels: list[grpc.Channel] = []
    try:
        yield connect
    finally:
        for channel in channels:
            channel.close()
        for proc in procs:
            proc.kill()
            proc.wait()


def call(channel: grpc.Channel, endpoint: str, **parameters: Any) -> Any:
    return call_future(channel, endpoint, **parameters).result()


def call_future(channel: grpc.Channel, endpoint: str, **parameters: Any) -> Any:
    _, data = build_request(endpoint, [Document()], parameters=parameters)
    return channel.unary_unary(EXECUTOR_PROCESS).future(data, timeout=20)


def thread_of(raw: bytes) -> str:
    return str(read_response(raw).results["blocking"]["thread"])


def test_short_sync_calls_run_on_the_event_loop_after_their_first(channel_to: Any) -> None:
    channel = channel_to()
    first, *later = [thread_of(call(channel, "/where")) for _ in range(3)]
    assert first.startswith("blocking") and later == ["MainThread", "MainThread"]


def test_sync_calls_thread_runs_them_in_the_worker_threads(channel_to: Any) -> None:
    channel = channel_to("--sync-calls", "thread")
    threads = {thread_of(call(channel, "/where")) for _ in range(3)}
    assert len(threads) == 1 and threads.pop().startswith("blocking")


def test_a_blocking_method_moves_to_the_threads_and_the_loop_keeps_answering(
    channel_to: Any,
) -> None:
    channel = channel_to()
    assert thread_of(call(channel, "/where")).startswith("blocking")  # first calls: threads
    assert thread_of(call(channel, "/block", seconds=0.05)).startswith("blocking")
    assert thread_of(call(channel, "/block", seconds=0.05)) == "MainThread"  # then the loop
    blocked = call_future(channel, "/block", seconds=3.0)
    time.sleep(0.3)
    # while the second call blocks its worker thread, health checks and async endpoints answer
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert thread_of(call(channel, "/ping")) == "MainThread"
    # and a short sync call waits its turn in the thread, not on the loop
    during = call_future(channel, "/where")
    assert not blocked.done()
    assert thread_of(blocked.result()).startswith("blocking")
    assert thread_of(during.result()).startswith("blocking")
    assert thread_of(call(channel, "/where")) == "MainThread"
