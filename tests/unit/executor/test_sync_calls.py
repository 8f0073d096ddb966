"""Where sync endpoint methods run: on the event loop while their calls are short, in the
worker threads once one is long, always there with ``in_thread=True`` or
``sync_calls='thread'``; and a call on the loop behaves as one in a thread would."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from meshflow import DocumentArray, Executor, dynamic_batching, requests
from meshflow.document.proto import struct_to_dict
from meshflow.errors import ConfigError
from meshflow.executor.calltime import LoopCalls, ThreadClock, Usage, verdict
from meshflow.executor.runtime import INLINE_CALL_LIMIT, LONG_CALL, ExecutorRuntime
from meshflow.proto.v1 import data_request_pb2

T = TypeVar("T")

FLAG: contextvars.ContextVar[str] = contextvars.ContextVar("flag", default="unset")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 20)

    return asyncio.run(bounded())


class Where(Executor):
    """Each endpoint answers with the thread it ran on."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slow_calls = 0

    @requests(on="/fast")
    def fast(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        return {"thread": threading.current_thread().name}

    @requests(on="/pinned", in_thread=True)
    def pinned(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        return {"thread": threading.current_thread().name}

    @requests(on="/slow")
    def slow(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        self.slow_calls += 1
        time.sleep(INLINE_CALL_LIMIT * 3)
        return {"thread": threading.current_thread().name}

    @requests(on="/long")
    def long(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        time.sleep(LONG_CALL * 1.5)
        return {"thread": threading.current_thread().name}

    @requests(on="/busy")
    def busy(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        end = time.thread_time() + INLINE_CALL_LIMIT * 3
        while time.thread_time() < end:
            pass
        return {"thread": threading.current_thread().name}

    @requests(on="/nested")
    def nested(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        async def inner() -> int:
            await asyncio.sleep(0)
            return 7

        return {"thread": threading.current_thread().name, "inner": asyncio.run(inner())}

    @requests(on="/flag")
    def flag(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        before = FLAG.get()
        FLAG.set("set by the method")
        return {"thread": threading.current_thread().name, "before": before}

    @requests(on="/crash")
    def crash(self, docs: DocumentArray, **kwargs: Any) -> None:
        raise ValueError("no stock")

    @requests(on="/batched")
    @dynamic_batching(preferred_batch_size=4, timeout=1)
    def batched(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        return {"thread": threading.current_thread().name}


def request(endpoint: str) -> bytes:
    message = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(request_id="r1", endpoint=endpoint)
    )
    message.docs.add(id="d0", text="a")
    return message.SerializeToString()


def answers(
    endpoints: list[str], *, sync_calls: Any = "auto", executor: Executor | None = None
) -> list[dict[str, Any]]:
    """The results of one request per endpoint, in turn, through one runtime."""

    async def go() -> list[dict[str, Any]]:
        runtime = ExecutorRuntime(executor or Where(), name="pool", sync_calls=sync_calls)
        try:
            out = []
            for endpoint in endpoints:
                answer = data_request_pb2.DataRequest.FromString(
                    await runtime.process(request(endpoint))
                )
                assert answer.status.code == data_request_pb2.Status.OK, answer.status
                out.append(struct_to_dict(answer.results["pool"]))
            return out
        finally:
            runtime.close()

    return run(go())


def on_loop(answer: dict[str, Any]) -> bool:
    return bool(answer["thread"] == threading.main_thread().name)


def on_worker(answer: dict[str, Any]) -> bool:
    return bool(answer["thread"].startswith("pool") and not on_loop(answer))


def test_a_short_sync_call_runs_on_the_event_loop_after_its_first_call() -> None:
    # the first call pays one-time costs (imports, caches, a model loaded on first use) in a
    # worker thread; the next ones run on the loop
    first, *later = answers(["/fast"] * 3)
    assert on_worker(first) and all(on_loop(a) for a in later)


def test_sync_calls_thread_sends_every_sync_call_to_the_worker_threads() -> None:
    assert all(on_worker(a) for a in answers(["/fast"] * 3, sync_calls="thread"))


def test_in_thread_methods_always_run_in_the_worker_threads() -> None:
    assert all(on_worker(a) for a in answers(["/pinned"] * 3))


def test_batched_sync_methods_run_in_the_worker_threads() -> None:
    # while a batch runs in a thread, the loop gathers the next one
    assert all(on_worker(a) for a in answers(["/batched"] * 2))


def test_a_long_call_sends_the_endpoints_later_calls_to_the_threads_for_good(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = Where()
    with caplog.at_level(logging.INFO, logger="meshflow.executor"):
        cold, first, second, third, fast, other = answers(
            ["/slow", "/slow", "/slow", "/slow", "/fast", "/fast"], executor=executor
        )
    # one slow call may be a hiccup; the second within 100 calls is the method's nature
    assert on_worker(cold) and on_loop(first) and on_loop(second) and on_worker(third)
    assert executor.slow_calls == 4
    assert on_worker(fast) and on_loop(other)  # only the slow endpoint moved
    assert "/slow" in caplog.text and "was blocked for" in caplog.text
    assert (
        "on the event loop, the second call past 2 ms within 100 calls; its calls run in the "
        "worker threads from now on"
    ) in caplog.text


def test_one_call_past_the_long_call_limit_is_enough() -> None:
    cold, first, second = answers(["/long", "/long", "/long"])
    assert on_worker(cold) and on_loop(first) and on_worker(second)


def test_a_call_that_computes_too_long_leaves_the_loop_too() -> None:
    cold, first, second, third = answers(["/busy"] * 4)
    assert on_worker(cold) and on_loop(first) and on_loop(second) and on_worker(third)


def test_only_computing_or_being_blocked_past_the_limit_counts() -> None:
    limit = INLINE_CALL_LIMIT
    start = Usage(cpu=1.0, waited=5.0, full_collections=3)

    def judge(wall: float, cpu: float, waited: float | None, collections: int = 3) -> str:
        after = Usage(1.0 + cpu, None if waited is None else 5.0 + waited, collections)
        return verdict(start, after, wall, limit)[1]

    # 5 ms, mostly waiting for a CPU: the machine was busy, not the call
    assert judge(wall=0.005, cpu=0.0005, waited=0.004) == ""
    assert judge(wall=0.005, cpu=0.004, waited=0.0) == "computed for 4.0 ms"
    assert judge(wall=0.005, cpu=0.0005, waited=0.001) == "was blocked for 3.5 ms"
    # a full collection ran during the call: it would have held the GIL anywhere
    assert judge(wall=0.02, cpu=0.02, waited=0.0, collections=4) == ""
    # where the kernel does not say how long the thread waited, all time off the CPU counts
    assert judge(wall=0.005, cpu=0.0005, waited=None) == "was blocked for 4.5 ms"


def test_hiccups_further_apart_than_the_window_never_add_up() -> None:
    calls = LoopCalls({"/x"}, limit=0.002, long_call=0.02, window=100)
    calls.warmed("/x")
    spent = [0.0]  # CPU seconds the scripted calls used

    def usage() -> Usage:
        return Usage(spent[0], 0.0, 0)

    calls.usage = usage  # type: ignore[method-assign]

    def call(cpu: float) -> str:
        before = calls.usage()
        spent[0] += cpu
        return calls.judge("/x", before, wall=cpu)

    for _ in range(3):  # a hiccup every 101 calls stays a hiccup
        assert call(0.005) == ""
        for _ in range(100):
            assert call(0.0001) == ""
    assert calls.runs("/x")
    assert call(0.005) == ""
    assert call(0.005).startswith("computed for 5.0 ms on the event loop, the second call")
    assert not calls.runs("/x")
    calls.warmed("/x")  # a later call in the pool does not bring it back
    assert not calls.runs("/x")


def test_only_time_computing_or_blocked_makes_a_call_long_not_its_wait_for_a_cpu() -> None:
    calls = LoopCalls({"/x"}, limit=0.002, long_call=0.02)
    calls.warmed("/x")
    now = [Usage(0.0, 0.0, 0)]
    calls.usage = lambda: now[0]  # type: ignore[method-assign]

    def call(wall: float, cpu: float, waited: float) -> str:
        before = now[0]
        assert before.waited is not None
        now[0] = Usage(before.cpu + cpu, before.waited + waited, 0)
        return calls.judge("/x", before, wall)

    # 30 ms of wall time, 3 of them computing: a strike, not a long call
    assert call(wall=0.03, cpu=0.003, waited=0.027) == ""
    assert calls.runs("/x")
    # 25 ms blocked: one is enough
    assert call(wall=0.026, cpu=0.001, waited=0.0) == "was blocked for 25.0 ms on the event loop"
    assert not calls.runs("/x")


def test_the_loop_threads_clock_reads_its_wait_for_a_cpu() -> None:
    clock = ThreadClock()
    try:
        before = clock.usage()
        end = time.thread_time() + 0.01
        while time.thread_time() < end:
            pass
        after = clock.usage()
    finally:
        clock.close()
    assert after.cpu - before.cpu >= 0.01
    assert before.waited is not None and after.waited is not None  # Linux says
    assert after.waited >= before.waited


def test_while_a_call_is_in_the_threads_short_calls_queue_behind_it() -> None:
    async def go() -> list[dict[str, Any]]:
        runtime = ExecutorRuntime(Where(), name="pool")
        try:

            async def ask(endpoint: str) -> dict[str, Any]:
                answer = await runtime.process(request(endpoint))
                return struct_to_dict(
                    data_request_pb2.DataRequest.FromString(answer).results["pool"]
                )

            await ask("/fast")  # its first call, in the thread
            await ask("/long")
            first = await ask("/long")  # on the loop, too long: the threads from now on
            slow = asyncio.ensure_future(ask("/long"))
            await asyncio.sleep(0)  # the slow call is in its thread
            during = await ask("/fast")
            assert slow.done()  # one worker thread: the fast call ran after it
            after = await ask("/fast")
            return [first, await slow, during, after]
        finally:
            runtime.close()

    first, slow, during, after = run(go())
    assert on_loop(first) and on_worker(slow)
    assert on_worker(during)  # never on the loop while a thread holds the executor
    assert on_loop(after)


def test_asyncio_run_inside_a_sync_method_on_the_loop_works() -> None:
    cold, first, second = answers(["/nested", "/nested", "/nested"])
    assert on_worker(cold) and on_loop(first) and on_loop(second)
    assert cold["inner"] == first["inner"] == second["inner"] == 7


def test_a_call_on_the_loop_keeps_its_context_changes_to_itself() -> None:
    async def go() -> tuple[dict[str, Any], str]:
        FLAG.set("the caller's")
        runtime = ExecutorRuntime(Where(), name="pool")
        try:
            await runtime.process(request("/flag"))  # the first call, in the thread
            answer = data_request_pb2.DataRequest.FromString(
                await runtime.process(request("/flag"))
            )
        finally:
            runtime.close()
        return struct_to_dict(answer.results["pool"]), FLAG.get()

    results, after = run(go())
    assert on_loop(results) and results["before"] == "the caller's"
    assert after == "the caller's"


def test_an_exception_on_the_loop_is_the_executors_error_status() -> None:
    async def go() -> data_request_pb2.DataRequest:
        runtime = ExecutorRuntime(Where(), name="pool")
        try:
            await runtime.process(request("/crash"))  # the first call, in the thread
            answer = await runtime.process(request("/crash"))  # on the loop
            # the loop is still in order: the next call is served
            ok = data_request_pb2.DataRequest.FromString(await runtime.process(request("/fast")))
            assert ok.status.code == data_request_pb2.Status.OK
            assert asyncio.get_running_loop() is asyncio.get_event_loop()
            return data_request_pb2.DataRequest.FromString(answer)
        finally:
            runtime.close()

    answer = run(go())
    assert answer.status.code == data_request_pb2.Status.ERROR
    assert answer.status.exception_type == "ValueError"
    assert answer.status.executor == "pool" and "no stock" in answer.status.message


def test_an_unknown_sync_calls_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sync_calls is 'inline'; use one of auto, thread"):
        ExecutorRuntime(Where(), name="pool", sync_calls="inline")  # type: ignore[arg-type]


def test_in_thread_on_an_async_method_is_refused() -> None:
    with pytest.raises(TypeError, match="in_thread is for sync methods"):

        class Wrong(Executor):
            @requests(on="/x", in_thread=True)
            async def x(self, docs: DocumentArray, **kwargs: Any) -> None:
                pass
