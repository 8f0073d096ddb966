"""Dynamic batching in the executor runtime: concurrent requests share one method call, and
each gets back exactly its own documents."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshflow import (
    ConfigError,
    DocumentArray,
    DynamicBatching,
    Executor,
    Flow,
    dynamic_batching,
    requests,
)
from meshflow.executor.batching import Batcher, CallCost, CallFailed
from meshflow.executor.runtime import ExecutorRuntime
from meshflow.observability.metrics import ExecutorMetrics
from meshflow.proto.v1 import data_request_pb2

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(bounded())


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (the test's own timeout bounds it)."""
    while not condition():
        await asyncio.sleep(0.001)


class Recorder(Executor):
    """Records each call's texts and parameters; its first call waits for ``gate``, so that
    the requests sent meanwhile queue up."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None

    @requests(on="/encode")
    @dynamic_batching(preferred_batch_size=100, timeout="auto")
    async def encode(self, docs: DocumentArray, parameters: dict[str, Any]) -> None:
        self.calls.append(([d.text for d in docs], dict(parameters)))
        if len(self.calls) == 1 and self.gate is not None:
            await self.gate.wait()
        if any(d.text == "boom" for d in docs):
            raise ValueError("the model choked on 'boom'")
        for doc in docs:
            doc.text = doc.text.upper()

    @requests(on="/plain")
    async def plain(self, docs: DocumentArray) -> None:
        self.calls.append(([d.text for d in docs], {}))


def request(
    rid: str, *texts: str, endpoint: str = "/encode", parameters: dict[str, Any] | None = None
) -> bytes:
    message = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(request_id=rid, endpoint=endpoint)
    )
    if parameters:
        message.parameters.update(parameters)
    for i, text in enumerate(texts):
        message.docs.add(id=f"{rid}-{i}", text=text)
    return message.SerializeToString()


def answer_of(raw: bytes) -> data_request_pb2.DataRequest:
    return data_request_pb2.DataRequest.FromString(raw)


async def gated(
    runtime: ExecutorRuntime, executor: Recorder, queued: list[bytes], endpoint: str = "/encode"
) -> tuple[data_request_pb2.DataRequest, list[data_request_pb2.DataRequest]]:
    """A first request holds the method; ``queued`` arrive meanwhile, then it is let go."""
    executor.gate = asyncio.Event()
    first = asyncio.ensure_future(runtime.process(request("first", "f")))
    await until(lambda: len(executor.calls) == 1)
    rest = [asyncio.ensure_future(runtime.process(data)) for data in queued]
    batcher = runtime.batcher(endpoint)
    assert batcher is not None
    await until(lambda: batcher.waiting == len(queued))
    executor.gate.set()
    answers = await asyncio.gather(first, *rest)
    return answer_of(answers[0]), [answer_of(a) for a in answers[1:]]


def gated_recorder(preferred: int) -> tuple[Recorder, ExecutorRuntime, Batcher]:
    """A Recorder whose first call waits for its gate, its batches full at ``preferred``."""
    executor = Recorder()
    executor.gate = asyncio.Event()
    options = {"/encode": DynamicBatching(preferred_batch_size=preferred, timeout="auto")}
    runtime = ExecutorRuntime(executor, name="enc", batching=options)
    batcher = runtime.batcher("/encode")
    assert batcher is not None
    return executor, runtime, batcher


def test_requests_of_different_sizes_are_merged_and_split_back_in_order() -> None:
    async def main() -> None:
        executor = Recorder()
        runtime = ExecutorRuntime(executor, name="enc")
        try:
            first, answers = await gated(
                runtime,
                executor,
                [request("a", "a0", "a1"), request("b", "b0", "b1", "b2"), request("c", "c0")],
            )
        finally:
            runtime.close()
        assert [texts for texts, _ in executor.calls] == [
            ["f"],
            ["a0", "a1", "b0", "b1", "b2", "c0"],
        ]
        assert [d.text for d in first.docs] == ["F"]
        for answer, rid, n in zip(answers, "abc", (2, 3, 1), strict=True):
            assert answer.status.code == data_request_pb2.Status.OK
            assert answer.header.request_id == rid
            assert [d.id for d in answer.docs] == [f"{rid}-{i}" for i in range(n)]
            assert [d.text for d in answer.docs] == [f"{rid.upper()}{i}" for i in range(n)]

    run(main())


def test_requests_with_different_parameters_are_never_merged() -> None:
    async def main() -> None:
        executor = Recorder()
        runtime = ExecutorRuntime(executor, name="enc")
        try:
            _, answers = await gated(
                runtime,
                executor,
                [
                    request("a", "a0", parameters={"lang": "en"}),
                    request("b", "b0", parameters={"lang": "de"}),
                    request("c", "c0", parameters={"lang": "en"}),
                    request("d", "d0"),
                ],
            )
        finally:
            runtime.close()
        assert executor.calls[1:] == [
            (["a0", "c0"], {"lang": "en"}),
            (["b0"], {"lang": "de"}),
            (["d0"], {}),
        ]
        assert [[d.text for d in a.docs] for a in answers] == [["A0"], ["B0"], ["C0"], ["D0"]]

    run(main())


def test_a_request_larger_than_the_preferred_batch_runs_alone() -> None:
    async def main() -> None:
        executor = Recorder()
        options = {"/encode": DynamicBatching(preferred_batch_size=3)}
        runtime = ExecutorRuntime(executor, name="enc", batching=options)
        try:
            _, answers = await gated(
                runtime,
                executor,
                [
                    request("a", "a0"),
                    request("b", "b0", "b1", "b2", "b3"),
                    request("c", "c0"),
                    request("d", "d0", "d1"),
                ],
            )
        finally:
            runtime.close()
        assert [texts for texts, _ in executor.calls[1:]] == [
            ["a0"],
            ["b0", "b1", "b2", "b3"],
            ["c0", "d0", "d1"],
        ]
        assert [len(a.docs) for a in answers] == [1, 4, 1, 2]

    run(main())


def test_a_failing_batch_fails_only_its_own_requests() -> None:
    async def main() -> None:
        executor = Recorder()
        runtime = ExecutorRuntime(executor, name="enc")
        try:
            first, answers = await gated(
                runtime,
                executor,
                [
                    request("a", "fine", parameters={"k": 1}),
                    request("b", "boom", parameters={"k": 1}),
                    request("c", "fine", parameters={"k": 2}),
                ],
            )
        finally:
            runtime.close()
        assert len(executor.calls) == 3  # first, then {a, b}, then {c}
        assert first.status.code == data_request_pb2.Status.OK
        for failed in answers[:2]:
            assert failed.status.code == data_request_pb2.Status.ERROR
            assert failed.status.executor == "enc"
            assert failed.status.exception_type == "ValueError"
            assert "choked" in failed.status.message
        assert answers[2].status.code == data_request_pb2.Status.OK
        assert [d.text for d in answers[2].docs] == ["FINE"]

    run(main())


def test_a_cancelled_request_leaves_the_queue_and_is_not_run() -> None:
    async def main() -> None:
        executor, runtime, batcher = gated_recorder(preferred=2)
        try:
            first = asyncio.ensure_future(runtime.process(request("first", "f")))
            await until(lambda: len(executor.calls) == 1)
            gone = asyncio.ensure_future(runtime.process(request("gone", "never")))
            kept = asyncio.ensure_future(runtime.process(request("kept", "k")))
            await until(lambda: batcher.waiting == 2)
            gone.cancel()
            await until(lambda: batcher.waiting == 1)
            executor.gate.set()
            await asyncio.gather(first, kept)
            with pytest.raises(asyncio.CancelledError):
                await gone
        finally:
            runtime.close()
        assert [texts for texts, _ in executor.calls] == [["f"], ["k"]]

    run(main())


def test_a_request_whose_deadline_passes_while_waiting_is_not_run() -> None:
    async def main() -> None:
        executor, runtime, batcher = gated_recorder(preferred=2)
        try:
            first = asyncio.ensure_future(runtime.process(request("first", "f")))
            await until(lambda: len(executor.calls) == 1)
            late = await runtime.process(request("late", "never"), lambda: 0.05)
            assert batcher.waiting == 0
            executor.gate.set()
            await first
        finally:
            runtime.close()
        answer = answer_of(late)
        assert answer.status.code == data_request_pb2.Status.ERROR
        assert answer.status.exception_type == "DeadlineExceeded"
        assert [texts for texts, _ in executor.calls] == [["f"]]

    run(main())


def test_adaptive_mode_never_holds_a_lone_request() -> None:
    async def main() -> None:
        calls: list[int] = []

        async def call(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            calls.append(len(docs))
            return None, 0.0, 0.001

        batcher = Batcher(DynamicBatching(preferred_batch_size=64, timeout="auto"), call)
        for i in range(5):  # one client, one request at a time
            pending = asyncio.ensure_future(
                batcher.submit(DocumentArray.empty(1), key="k", kwargs={})
            )
            await asyncio.sleep(0)  # submit runs up to its wait: the call is under way
            assert batcher.running == 1 and batcher.waiting == 0, i
            await pending
        assert calls == [1] * 5

    run(main())


class SyncRecorder(Executor):
    """A sync method (run in the worker thread): its first call waits for ``gate``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[list[str]] = []
        self.gate = threading.Event()

    @requests(on="/encode")
    @dynamic_batching(preferred_batch_size=2, timeout="auto")
    def encode(self, docs: DocumentArray, **kwargs: Any) -> None:
        self.calls.append([d.text for d in docs])
        if len(self.calls) == 1:
            self.gate.wait(5)
        for doc in docs:
            doc.text = doc.text.upper()


def test_a_full_batch_is_handed_to_a_busy_worker_ahead_and_a_partial_one_waits() -> None:
    """A sync method: while its worker thread runs a call, the next *full* batch is taken and
    queued in the thread pool (the worker goes straight on to it); a batch that is not full
    stays in the queue, where later requests can still join it."""

    async def main() -> None:
        executor = SyncRecorder()
        runtime = ExecutorRuntime(executor, name="enc")
        batcher = runtime.batcher("/encode")
        assert batcher is not None
        try:
            first = asyncio.ensure_future(runtime.process(request("first", "f")))
            await until(lambda: len(executor.calls) == 1)
            rest = [
                asyncio.ensure_future(runtime.process(request(rid, rid))) for rid in ("a", "b", "c")
            ]
            await until(lambda: batcher.running == 2)
            await asyncio.sleep(0.02)
            assert batcher.running == 2 and batcher.waiting == 1  # [a, b] ahead; c waits
            assert len(executor.calls) == 1  # one worker: [a, b] has not started
            executor.gate.set()
            answers = [answer_of(a) for a in await asyncio.gather(first, *rest)]
        finally:
            executor.gate.set()
            runtime.close()
        assert executor.calls == [["f"], ["a", "b"], ["c"]]
        assert [[d.text for d in a.docs] for a in answers] == [["F"], ["A"], ["B"], ["C"]]

    run(main())


def test_an_async_method_never_takes_a_batch_ahead() -> None:
    async def main() -> None:
        executor, runtime, batcher = gated_recorder(preferred=2)
        try:
            first = asyncio.ensure_future(runtime.process(request("first", "f")))
            await until(lambda: len(executor.calls) == 1)
            rest = [asyncio.ensure_future(runtime.process(request(r, r))) for r in "ab"]
            await until(lambda: batcher.waiting == 2)
            await asyncio.sleep(0.02)
            assert batcher.running == 1  # the loop runs one call of the endpoint at a time
            executor.gate.set()
            await asyncio.gather(first, *rest)
        finally:
            runtime.close()
        assert [texts for texts, _ in executor.calls] == [["f"], ["a", "b"]]

    run(main())


def test_a_fixed_timeout_waits_for_the_preferred_size() -> None:
    async def main() -> None:
        calls: list[int] = []

        async def call(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            calls.append(len(docs))
            return None, 0.0, 0.0

        batcher = Batcher(DynamicBatching(preferred_batch_size=3, timeout=60_000), call)
        pending = [
            asyncio.ensure_future(batcher.submit(DocumentArray.empty(1), key="k", kwargs={}))
            for _ in range(2)
        ]
        await asyncio.sleep(0.01)
        assert batcher.waiting == 2 and calls == []  # not full, the timeout far away
        pending.append(
            asyncio.ensure_future(batcher.submit(DocumentArray.empty(1), key="k", kwargs={}))
        )
        await asyncio.gather(*pending)
        assert calls == [3]

    run(main())


def test_a_fixed_timeout_runs_what_has_gathered_when_it_expires() -> None:
    async def main() -> None:
        calls: list[int] = []

        async def call(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            calls.append(len(docs))
            return None, 0.0, 0.0

        batcher = Batcher(DynamicBatching(preferred_batch_size=100, timeout=20), call)
        served = await batcher.submit(DocumentArray.empty(2), key="k", kwargs={})
        assert calls == [2] and served.batch_requests == 1

    run(main())


def test_a_dict_result_goes_to_every_request_and_a_short_answer_fails_the_batch() -> None:
    async def main() -> None:
        async def count(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            return {"n": len(docs)}, 0.0, 0.0

        batcher = Batcher(DynamicBatching(preferred_batch_size=2, timeout=60_000), count)
        a, b = await asyncio.gather(
            batcher.submit(DocumentArray.empty(1), key="k", kwargs={}),
            batcher.submit(DocumentArray.empty(1), key="k", kwargs={}),
        )
        assert a.result == b.result == {"n": 2}

        async def short(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            return DocumentArray(docs[:1]), 0.0, 0.0

        batcher = Batcher(DynamicBatching(preferred_batch_size=2, timeout=60_000), short)
        results = await asyncio.gather(
            batcher.submit(DocumentArray.empty(1), key="k", kwargs={}),
            batcher.submit(DocumentArray.empty(1), key="k", kwargs={}),
            return_exceptions=True,
        )
        assert all(isinstance(r, ValueError) for r in results)
        assert "must answer every document" in str(results[0])

    run(main())


def test_endpoints_without_batching_keep_the_direct_path() -> None:
    runtime = ExecutorRuntime(Recorder(), name="enc")
    try:
        assert runtime.batcher("/plain") is None
        assert runtime.batcher("/encode") is not None
    finally:
        runtime.close()


def test_call_cost_holds_a_lone_request_only_when_company_is_due_sooner_than_it_saves() -> None:
    cost = CallCost()
    assert cost.idle_hold() == 0.0  # nothing measured
    for _ in range(5):
        for docs in (1, 8, 32):
            cost.observe(docs, 0.010 + 0.001 * docs)
    assert cost.fixed == pytest.approx(0.010, rel=0.01)
    for t in range(5):
        cost.arrived(float(t))  # one request a second
    assert cost.idle_hold() == 0.0
    busy = CallCost()
    for _ in range(5):
        for docs in (1, 8, 32):
            busy.observe(docs, 0.010 + 0.001 * docs)
    for t in range(50):
        busy.arrived(t * 0.002)  # one every 2 ms, sooner than the 10 ms a call costs anyway
    assert busy.idle_hold() == pytest.approx(0.002, rel=0.01)
    flat = CallCost()
    for _ in range(5):
        for docs in (1, 8, 32):
            flat.observe(docs, 0.005 * docs)  # all per document: nothing to save by waiting
    for t in range(50):
        flat.arrived(t * 0.001)
    assert flat.idle_hold() == 0.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"preferred_batch_size": 0}, "preferred_batch_size must be a whole number >= 1"),
        ({"preferred_batch_size": True}, "preferred_batch_size must be a whole number"),
        ({"timeout": -1}, "timeout must be milliseconds >= 0 or 'auto'"),
        ({"timeout": "soon"}, "timeout must be milliseconds >= 0 or 'auto'"),
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DynamicBatching(**options)
    with pytest.raises(ConfigError, match=message):
        dynamic_batching(**options)


def test_the_deployment_option_names_endpoints_the_executor_serves() -> None:
    flow = Flow().add(
        uses=Recorder, name="enc", uses_dynamic_batching={"plain": {"preferred_batch_size": 4}}
    )
    assert flow.deployment("enc").uses_dynamic_batching == {
        "/plain": DynamicBatching(preferred_batch_size=4)
    }
    with pytest.raises(ConfigError, match="does not serve; its endpoints: /encode, /plain"):
        Flow().add(uses=Recorder, uses_dynamic_batching={"/search": {}})
    with pytest.raises(ConfigError, match="unknown field"):
        Flow().add(uses=Recorder, uses_dynamic_batching={"/encode": {"size": 4}})
    with pytest.raises(ConfigError, match="must map endpoints"):
        Flow().add(uses=Recorder, uses_dynamic_batching=[16])  # type: ignore[arg-type]


def test_the_deployment_option_wins_over_the_decorator() -> None:
    options = {"/encode": DynamicBatching(preferred_batch_size=2, timeout=5)}
    runtime = ExecutorRuntime(Recorder(), name="enc", batching=options)
    try:
        batcher = runtime.batcher("/encode")
        assert batcher is not None and batcher.options == options["/encode"]
    finally:
        runtime.close()
    with pytest.raises(ConfigError, match="does not serve"):
        ExecutorRuntime(Recorder(), name="enc", batching={"/nope": DynamicBatching()})


def test_the_batched_call_is_one_span_linked_to_the_requests_it_served() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async def traced(runtime: ExecutorRuntime, rid: str, *texts: str) -> bytes:
        with tracer.start_as_current_span(f"request {rid}"):
            return await runtime.process(request(rid, *texts))

    async def main() -> None:
        executor = Recorder()
        executor.gate = asyncio.Event()
        runtime = ExecutorRuntime(executor, name="enc", tracer=tracer)
        batcher = runtime.batcher("/encode")
        assert batcher is not None
        try:
            first = asyncio.ensure_future(traced(runtime, "first", "f"))
            await until(lambda: len(executor.calls) == 1)
            rest = [asyncio.ensure_future(traced(runtime, r, r + "0")) for r in "abc"]
            await until(lambda: batcher.waiting == 3)
            executor.gate.set()
            await asyncio.gather(first, *rest)
        finally:
            runtime.close()

    run(main())
    finished = exporter.get_finished_spans()
    spans = {s.name: s for s in finished}
    batches = [s for s in finished if s.name == "enc /encode batch"]
    assert len(batches) == 2  # the first request alone, then a, b and c together
    shared = next(s for s in batches if s.attributes["meshflow.batch.requests"] == 3)
    served = [spans[f"request {r}"].context.span_id for r in "abc"]
    assert [link.context.span_id for link in shared.links] == served
    assert shared.parent is not None and shared.parent.span_id == served[0]
    assert shared.attributes["meshflow.batch.docs"] == 3
    assert spans["request b"].attributes["meshflow.batch.requests"] == 3


def test_batch_sizes_and_waits_are_in_the_executor_metrics() -> None:
    metrics = ExecutorMetrics("enc")

    async def main() -> None:
        executor = Recorder()
        runtime = ExecutorRuntime(executor, name="enc", metrics=metrics)
        try:
            await gated(runtime, executor, [request(r, r + "0", r + "1") for r in "abc"])
        finally:
            runtime.close()

    run(main())
    text = metrics.exposition().decode()
    labels = '{deployment="enc",endpoint="/encode"}'
    assert f"meshflow_executor_batch_size_count{labels} 2.0" in text
    assert f"meshflow_executor_batch_size_sum{labels} 7.0" in text  # 1, then 3 x 2
    assert f"meshflow_executor_batch_requests_sum{labels} 4.0" in text
    assert f"meshflow_executor_batch_wait_seconds_count{labels} 4.0" in text


def sample(text: str, series: str) -> float:
    """The value of one series of an exposition, e.g. ``name_sum{labels}``."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match is not None, series
    return float(match.group(1))


class Stalled(Executor):
    """A batched method whose backend times out."""

    @requests(on="/encode")
    @dynamic_batching(preferred_batch_size=4, timeout="auto")
    async def encode(self, docs: DocumentArray) -> None:
        raise TimeoutError("the model backend timed out after 3 s")


def test_a_timeout_error_the_method_raises_is_its_own_not_a_deadline() -> None:
    async def main() -> list[data_request_pb2.DataRequest]:
        runtime = ExecutorRuntime(Stalled(), name="enc")
        try:
            return [
                answer_of(await runtime.process(request("a", "x"), remaining))
                for remaining in (None, lambda: 30.0)  # no deadline, and a far one
            ]
        finally:
            runtime.close()

    for answer in run(main()):
        assert answer.status.code == data_request_pb2.Status.ERROR
        assert answer.status.exception_type == "TimeoutError"
        assert "backend timed out" in answer.status.message


def test_failed_and_expired_requests_count_their_wait_in_the_metrics() -> None:
    """A request whose batch failed waited for it like any other, and one whose deadline
    passed in the queue spent all its time waiting: both are in the batch wait and queue
    series, and the failed call's own time is its processing time."""
    metrics = ExecutorMetrics("enc")

    async def main() -> None:
        executor = Recorder()
        executor.gate = asyncio.Event()
        options = {"/encode": DynamicBatching(preferred_batch_size=100, timeout="auto")}
        runtime = ExecutorRuntime(executor, name="enc", batching=options, metrics=metrics)
        try:
            first = asyncio.ensure_future(runtime.process(request("first", "f")))
            await until(lambda: len(executor.calls) == 1)
            failing = [asyncio.ensure_future(runtime.process(request(r, "boom"))) for r in "ab"]
            late = answer_of(await runtime.process(request("late", "never"), lambda: 0.05))
            assert late.status.exception_type == "DeadlineExceeded"
            executor.gate.set()
            answers = [answer_of(a) for a in await asyncio.gather(first, *failing)]
        finally:
            runtime.close()
        assert [a.status.exception_type for a in answers[1:]] == ["ValueError"] * 2
        assert len(executor.calls) == 2  # first, then a and b together

    run(main())
    text = metrics.exposition().decode()
    labels = '{deployment="enc",endpoint="/encode"}'
    assert sample(text, f"meshflow_executor_batch_wait_seconds_count{labels}") == 4.0
    # a, b and late each waited at least late's 50 ms deadline (the first one did not wait)
    assert sample(text, f"meshflow_executor_batch_wait_seconds_sum{labels}") >= 0.14
    assert sample(text, f"meshflow_executor_queue_seconds_count{labels}") == 4.0
    assert sample(text, f"meshflow_executor_queue_seconds_sum{labels}") >= 0.14
    assert sample(text, f"meshflow_executor_processing_seconds_sum{labels}") > 0.0


def test_a_failed_call_is_not_taken_for_a_free_one_by_the_cost_model() -> None:
    async def main() -> None:
        failing = False

        async def call(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            if failing:  # as the runtime reports a method that raised at once
                raise CallFailed(ValueError("the model choked"), 1.0, 1.0)
            return None, 0.0, 0.010 + 0.001 * len(docs)

        batcher = Batcher(DynamicBatching(preferred_batch_size=64, timeout="auto"), call)
        for n in (1, 8, 32, 1, 8, 32):
            await batcher.submit(DocumentArray.empty(n), key="k", kwargs={})
        assert batcher.cost.fixed == pytest.approx(0.010, rel=0.01)
        failing = True
        for n in (1, 2, 3, 4):
            with pytest.raises(ValueError, match="the model choked"):  # the method's own
                await batcher.submit(DocumentArray.empty(n), key="k", kwargs={})
        assert batcher.cost.fixed == pytest.approx(0.010, rel=0.01)

    run(main())


def test_a_lone_client_after_a_burst_is_not_held() -> None:
    """After a burst the mean arrival gap is far below the fixed cost of a call, and stays
    so for many requests; a client that sends one request at a time still runs at once."""

    async def main() -> None:
        async def call(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            await asyncio.sleep(0.05)
            # What the fit learns: 40 ms fixed, below the 50 ms the call really takes.
            return None, 0.0, 0.040 + 0.0001 * len(docs)

        batcher = Batcher(DynamicBatching(preferred_batch_size=64, timeout="auto"), call)
        for n in (1, 4, 12, 2, 8, 16):  # requests every few ms: batches of several sizes
            pending = []
            for _ in range(n):
                pending.append(
                    asyncio.ensure_future(
                        batcher.submit(DocumentArray.empty(1), key="k", kwargs={})
                    )
                )
                await asyncio.sleep(0.003)
            await asyncio.gather(*pending)
        assert batcher.cost.fixed == pytest.approx(0.040, rel=0.01)
        for i in range(5):  # now one client, one request at a time
            pending_one = asyncio.ensure_future(
                batcher.submit(DocumentArray.empty(1), key="k", kwargs={})
            )
            await asyncio.sleep(0)  # submit runs up to its wait
            assert batcher.running == 1 and batcher.waiting == 0, i
            served = await pending_one
            assert served.waited < 0.005, i

    run(main())


def test_a_method_that_lets_a_cancellation_out_fails_its_batch_instead_of_hanging() -> None:
    async def main() -> None:
        async def call(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            cancelled = asyncio.get_running_loop().create_future()
            cancelled.cancel()  # e.g. a shared connection's task, cancelled by its owner
            await cancelled
            return None, 0.0, 0.0

        batcher = Batcher(
            DynamicBatching(preferred_batch_size=4, timeout="auto"), call, endpoint="/encode"
        )
        results = await asyncio.gather(
            *(batcher.submit(DocumentArray.empty(1), key="k", kwargs={}) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, RuntimeError) for r in results), results
        assert "/encode" in str(results[0])
        assert "raised asyncio.CancelledError" in str(results[0])
        assert batcher.running == 0 and batcher.waiting == 0

    run(main())


def test_closing_the_batcher_cancels_the_requests_of_a_running_batch() -> None:
    async def main() -> None:
        async def call(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            await asyncio.Event().wait()  # never ends
            return None, 0.0, 0.0

        batcher = Batcher(DynamicBatching(preferred_batch_size=4, timeout="auto"), call)
        pending = asyncio.ensure_future(batcher.submit(DocumentArray.empty(1), key="k", kwargs={}))
        await until(lambda: batcher.running == 1)
        batcher.close()
        # Not awaited bare: the test's own timeout would cancel that await too.
        await asyncio.wait((pending,), timeout=5)
        assert pending.cancelled()

    run(main())


class CountingDocs(DocumentArray):
    """Counts how often a length is taken: each time a queue's documents are counted."""

    counted = 0

    def __len__(self) -> int:
        CountingDocs.counted += 1
        return super().__len__()


@pytest.mark.parametrize(
    ("distinct", "preferred"),
    [(True, 64), (False, 100_000)],
    ids=["a-queue-per-request", "one-long-queue"],
)
def test_queueing_work_per_request_does_not_grow_with_the_waiting_requests(
    distinct: bool, preferred: int
) -> None:
    """Thousands of requests wait while a call runs, each in its own queue (parameters of its
    own) or all in one that never fills: the documents are counted a constant number of times
    per request, however many wait (not once per waiting request on every arrival)."""

    async def per_request(n: int) -> float:
        gate = asyncio.Event()

        async def call(docs: DocumentArray, kwargs: dict[str, Any]) -> tuple[Any, float, float]:
            await gate.wait()
            return None, 0.0, 0.0

        options = DynamicBatching(preferred_batch_size=preferred, timeout="auto")
        batcher = Batcher(options, call, concurrency=1, ahead=True)
        first = asyncio.ensure_future(batcher.submit(CountingDocs.empty(1), key=-1, kwargs={}))
        await until(lambda: batcher.running == 1)
        CountingDocs.counted = 0
        rest = [
            asyncio.ensure_future(
                batcher.submit(CountingDocs.empty(1), key=i if distinct else 0, kwargs={})
            )
            for i in range(n)
        ]
        await until(lambda: batcher.waiting == n)
        gate.set()
        served = await asyncio.gather(first, *rest)
        assert all(len(s.docs) == 1 for s in served[1:])  # counted too: once per request
        return CountingDocs.counted / n

    small, large = run(per_request(500)), run(per_request(4000))
    assert small <= 4 and large <= 4, (small, large)


def test_a_failed_batch_span_records_the_method_s_own_error() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async def main() -> data_request_pb2.DataRequest:
        runtime = ExecutorRuntime(Recorder(), name="enc", tracer=tracer)
        try:
            with tracer.start_as_current_span("request a"):
                return answer_of(await runtime.process(request("a", "boom")))
        finally:
            runtime.close()

    assert run(main()).status.exception_type == "ValueError"
    [batch] = [s for s in exporter.get_finished_spans() if s.name == "enc /encode batch"]
    assert not batch.status.is_ok
    assert batch.status.description == "ValueError: the model choked on 'boom'"
    assert [e.attributes["exception.type"] for e in batch.events] == ["ValueError"]
