"""The traversal engine driven through its one seam, a :class:`ScriptedTransport`: joins,
leaves, polling, deadlines, failures and pushdown, with no process and no socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from meshflow import DocumentArray, Executor, requests
from meshflow.errors import BadRequestError, DeadlineExceeded, RequestError, UnavailableError
from meshflow.executor.runtime import ExecutorRuntime
from meshflow.gateway.sharding import shard_of
from meshflow.gateway.testing import Call, ScriptedTransport
from meshflow.gateway.topology import Node, Topology
from meshflow.gateway.traversal import Traversal
from meshflow.proto.v1 import data_request_pb2, document_pb2
from meshflow.types import Polling

T = TypeVar("T")
Step = Callable[[data_request_pb2.DataRequest], None]


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(bounded())


def node(
    name: str,
    *needs: str,
    shards: int = 1,
    polling: Polling = "ANY",
    timeout: float | None = None,
) -> Node:
    return Node(
        name=name,
        needs=needs or ("gateway",),
        shards=tuple((f"{name}-{s}",) for s in range(shards)),
        polling={"*": polling},
        timeout=timeout,
    )


def request(*ids: str, endpoint: str = "/index", fields: tuple[str, ...] = ()) -> bytes:
    message = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(request_id="r1", endpoint=endpoint, fields=fields)
    )
    for doc_id in ids or ("d0",):
        message.docs.add(id=doc_id)
    return message.SerializeToString()


def decode(data: bytes) -> data_request_pb2.DataRequest:
    return data_request_pb2.DataRequest.FromString(data)


def scripted(steps: dict[str, Step]) -> ScriptedTransport:
    """Each deployment named in ``steps`` changes the request in place; others echo it."""

    def handler(call: Call) -> bytes:
        step = steps.get(call.deployment)
        if step is None:
            return call.data
        message = call.request
        step(message)
        return message.SerializeToString()

    return ScriptedTransport(handler)


def fail(message: data_request_pb2.DataRequest) -> None:
    message.status.code = data_request_pb2.Status.ERROR
    message.status.executor = "bad"
    message.status.message = "it broke"


def traverse(
    transport: ScriptedTransport,
    *nodes: Node,
    data: bytes | None = None,
    deadline: float | None = None,
    pushdown: bool = False,
) -> data_request_pb2.DataRequest:
    traversal = Traversal(Topology(nodes), transport)
    answer = run(traversal.run(data or request(), "/index", deadline, pushdown=pushdown))
    return decode(answer)


def texts(answer: data_request_pb2.DataRequest) -> list[str]:
    return [d.text for d in answer.docs]


# -- the graph -----------------------------------------------------------------------------


def test_a_chain_hands_each_answer_to_the_next_executor() -> None:
    def append(name: str) -> Step:
        def step(message: data_request_pb2.DataRequest) -> None:
            message.docs[0].text += name

        return step

    transport = scripted({n: append(n) for n in "abc"})
    answer = traverse(transport, node("a"), node("b", "a"), node("c", "b"))
    assert [c.deployment for c in transport.calls] == ["a", "b", "c"]
    assert [c.request.docs[0].text for c in transport.calls] == ["", "a", "ab"]
    assert texts(answer) == ["abc"]


def test_a_join_fires_once_after_all_its_needs_with_their_answers_merged() -> None:
    async def handler(call: Call) -> bytes:
        message = call.request
        if call.deployment == "slow":
            await asyncio.sleep(0.01)  # the join must wait for it, not fire on the fast one
            message.docs[0].uri = "from-slow"
        elif call.deployment == "fast":
            message.docs[0].text = "from-fast"
        return message.SerializeToString()

    transport = ScriptedTransport(handler)
    answer = traverse(transport, node("fast"), node("slow"), node("join", "fast", "slow"))
    [joined] = transport.to("join")
    assert transport.calls[-1] is joined
    assert (joined.request.docs[0].text, joined.request.docs[0].uri) == ("from-fast", "from-slow")
    assert (answer.docs[0].text, answer.docs[0].uri) == ("from-fast", "from-slow")


def test_the_answers_of_several_leaves_are_merged_by_document_id() -> None:
    def left(message: data_request_pb2.DataRequest) -> None:
        message.docs[0].text = "left"
        message.docs.add(id="only-left")

    def right(message: data_request_pb2.DataRequest) -> None:
        message.docs[0].uri = "right"
        message.results["right"].update({"seen": 1})

    transport = scripted({"left": left, "right": right})
    answer = traverse(transport, node("root"), node("left", "root"), node("right", "root"))
    assert [d.id for d in answer.docs] == ["d0", "only-left"]
    assert (answer.docs[0].text, answer.docs[0].uri) == ("left", "right")
    assert dict(answer.results["right"]) == {"seen": 1}


# -- polling -------------------------------------------------------------------------------


def test_all_polling_calls_every_shard_and_ranks_their_matches_together() -> None:
    def handler(call: Call) -> bytes:
        message = call.request
        for rank, score in enumerate((0.9, 0.3) if call.shard == 0 else (0.8, 0.1)):
            match = message.docs[0].matches.add(id=f"s{call.shard}-{rank}")
            match.scores["cosine"] = score
        return message.SerializeToString()

    transport = ScriptedTransport(handler)
    answer = traverse(transport, node("index", shards=2, polling="ALL"))
    assert sorted(c.shard for c in transport.calls) == [0, 1]
    assert {c.data for c in transport.calls} == {request()}
    assert [m.id for m in answer.docs[0].matches] == ["s0-0", "s1-0"]  # each shard's top 2


def test_any_polling_calls_one_shard_per_request_in_turn() -> None:
    transport = ScriptedTransport()
    traversal = Traversal(Topology((node("index", shards=3, polling="ANY"),)), transport)

    async def six() -> None:
        for _ in range(6):
            await traversal.run(request(), "/index", None)

    run(six())
    assert [c.shard for c in transport.calls] == [0, 1, 2, 0, 1, 2]


def test_polling_is_chosen_per_endpoint() -> None:
    transport = ScriptedTransport()
    mixed = Node(
        name="index",
        needs=("gateway",),
        shards=(("a",), ("b",)),
        polling={"/search": "ALL", "*": "ANY"},
    )
    traversal = Traversal(Topology((mixed,)), transport)
    run(traversal.run(request(endpoint="/search"), "/search", None))
    assert len(transport.calls) == 2
    run(traversal.run(request(), "/index", None))
    assert len(transport.calls) == 3


def test_id_polling_sends_each_shard_only_its_documents_and_keeps_request_order() -> None:
    ids = [f"doc-{i}" for i in range(12)]

    def handler(call: Call) -> bytes:
        message = call.request
        for doc in message.docs:
            doc.text = f"shard {call.shard}"
        return message.SerializeToString()

    transport = ScriptedTransport(handler)
    answer = traverse(transport, node("store", shards=3, polling="ID"), data=request(*ids))
    for call in transport.calls:
        assert {shard_of(d.id, 3) for d in call.request.docs} == {call.shard}
    assert [d.id for d in answer.docs] == ids
    assert texts(answer) == [f"shard {shard_of(i, 3)}" for i in ids]


def test_one_failing_shard_is_the_answer_under_all_and_id_polling() -> None:
    def handler(call: Call) -> bytes:
        message = call.request
        if call.shard == 1:
            fail(message)
        return message.SerializeToString()

    for polling in ("ALL", "ID"):
        ids = [f"doc-{i}" for i in range(12)]
        transport = ScriptedTransport(handler)
        deployment = node("store", shards=2, polling=polling)
        answer = traverse(transport, deployment, data=request(*ids))
        assert answer.status.code == data_request_pb2.Status.ERROR, polling
        assert answer.status.message == "it broke"


# -- deadlines -----------------------------------------------------------------------------


async def forever(call: Call) -> bytes:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_an_executor_past_its_own_timeout_is_an_error_answer_naming_it() -> None:
    transport = ScriptedTransport(forever)
    answer = traverse(
        transport, node("slow", timeout=0.05), deadline=time.monotonic() + 30, data=request("x")
    )
    assert answer.status.code == data_request_pb2.Status.ERROR
    assert answer.status.executor == "slow"
    assert answer.status.exception_type == "DeadlineExceeded"
    assert "within its timeout of 0.05 s" in answer.status.message
    assert [d.id for d in answer.docs] == ["x"]  # the request's documents, untouched
    assert transport.calls[0].timeout == 0.05


def test_the_callers_deadline_before_the_executor_timeout_raises_deadline_exceeded() -> None:
    transport = ScriptedTransport(forever)
    with pytest.raises(DeadlineExceeded, match="'slow'"):
        traverse(transport, node("slow", timeout=30), deadline=time.monotonic() + 0.05)
    [call] = transport.calls
    assert call.timeout is not None and call.timeout <= 0.05


def test_a_deadline_already_passed_raises_before_the_executor_is_called() -> None:
    transport = ScriptedTransport()
    with pytest.raises(DeadlineExceeded, match="before executor 'first' was called"):
        traverse(transport, node("first"), deadline=time.monotonic() - 1)
    assert transport.calls == []


def test_without_a_callers_deadline_each_call_gets_its_deployments_timeout() -> None:
    transport = ScriptedTransport()
    traverse(transport, node("a", timeout=2.5), node("b", "a"))
    assert [c.timeout for c in transport.calls] == [2.5, None]


# -- failures ------------------------------------------------------------------------------


def test_an_error_status_stops_a_chain_and_is_the_answer() -> None:
    transport = scripted({"a": fail})
    answer = traverse(transport, node("a"), node("b", "a"), node("c", "b"))
    assert [c.deployment for c in transport.calls] == ["a"]
    assert (answer.status.executor, answer.status.message) == ("bad", "it broke")


def test_a_failed_branch_keeps_its_join_from_firing_and_is_the_answer() -> None:
    transport = scripted({"left": fail})
    answer = traverse(transport, node("left"), node("right"), node("join", "left", "right"))
    assert transport.to("join") == []
    assert answer.status.message == "it broke"


def test_an_unreachable_executor_is_an_error_answer_naming_it() -> None:
    def handler(call: Call) -> bytes:
        raise UnavailableError("connection refused")

    answer = traverse(ScriptedTransport(handler), node("gone"), data=request("x"))
    assert answer.status.code == data_request_pb2.Status.ERROR
    assert (answer.status.executor, answer.status.endpoint) == ("gone", "/index")
    assert answer.status.exception_type == "UnavailableError"
    assert [d.id for d in answer.docs] == ["x"]


def test_a_request_an_executor_refuses_as_bad_is_raised_to_the_caller() -> None:
    def handler(call: Call) -> bytes:
        raise BadRequestError("malformed DataRequest")

    with pytest.raises(BadRequestError, match="malformed"):
        traverse(ScriptedTransport(handler), node("strict"))


def test_an_unexpected_exception_is_an_internal_error_naming_the_step() -> None:
    def handler(call: Call) -> bytes:
        raise KeyError("surprise")

    with pytest.raises(RequestError) as info:
        traverse(ScriptedTransport(handler), node("buggy"))
    assert type(info.value) is RequestError
    assert "'buggy'" in str(info.value) and "'/index'" in str(info.value)
    assert "KeyError" in str(info.value)


# -- pushdown ------------------------------------------------------------------------------


def last_hops(transport: ScriptedTransport) -> list[str]:
    return [c.deployment for c in transport.calls if c.request.header.last_hop]


def test_pushdown_marks_only_the_last_call_of_a_chain() -> None:
    transport = ScriptedTransport()
    traverse(transport, node("a"), node("b", "a"), node("c", "b"), pushdown=True)
    assert last_hops(transport) == ["c"]


def test_pushdown_marks_every_leaf_of_a_graph_and_no_inner_node() -> None:
    transport = ScriptedTransport()
    nodes = (node("root"), node("left", "root"), node("right", "root"), node("side"))
    traverse(transport, *nodes, pushdown=True)
    assert sorted(last_hops(transport)) == ["left", "right", "side"]


def test_without_pushdown_no_call_is_marked_as_the_last_hop() -> None:
    transport = ScriptedTransport()
    traverse(transport, node("a"), node("b", "a"), node("c"))
    assert last_hops(transport) == []


class Encode(Executor):
    @requests
    def encode(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.embedding = [1.0, 2.0]
            doc.text = "encoded"


class Tag(Executor):
    @requests
    def tag(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.tags = {"seen": True}


def in_process(**executors: Executor) -> ScriptedTransport:
    """Executors served by their real runtime, called in-process."""
    runtimes = {name: ExecutorRuntime(e, name=name) for name, e in executors.items()}

    def handler(call: Call) -> Awaitable[bytes]:
        return runtimes[call.deployment].process(call.data)

    return ScriptedTransport(handler)


def test_pushdown_leaves_only_the_selected_fields_applied_by_the_last_hop() -> None:
    transport = in_process(encode=Encode(), tag=Tag())
    data = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(endpoint="/index", fields=["text"]),
        docs=[document_pb2.Document(id="d")],
    ).SerializeToString()
    answer = traverse(transport, node("encode"), node("tag", "encode"), data=data, pushdown=True)
    [to_tag] = transport.to("tag")
    assert to_tag.request.docs[0].HasField("embedding")  # inner hops keep every field
    [doc] = answer.docs
    assert doc.text == "encoded"
    assert not doc.HasField("embedding") and not doc.HasField("tags")


def test_in_process_executors_run_behind_the_fake_transport() -> None:
    transport = in_process(encode=Encode(), tag=Tag())
    answer = traverse(transport, node("encode"), node("tag", "encode"))
    [doc] = answer.docs
    assert doc.text == "encoded" and doc.HasField("embedding") and doc.HasField("tags")
