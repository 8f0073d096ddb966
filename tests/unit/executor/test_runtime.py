"""``ExecutorRuntime.process``: serialized DataRequest in, serialized answer out, with no
server around it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from meshflow import Document, DocumentArray, Executor, requests
from meshflow.errors import BadRequestError
from meshflow.executor.runtime import ExecutorRuntime
from meshflow.proto.v1 import data_request_pb2, document_pb2

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(bounded())


class Shop(Executor):
    """One endpoint per way an endpoint can answer."""

    @requests(on="/upper")
    def upper(self, docs: DocumentArray, parameters: dict[str, Any]) -> None:
        for doc in docs:
            doc.text = doc.text.upper() + parameters.get("suffix", "")

    @requests(on="/count")
    async def count(self, docs: DocumentArray) -> dict[str, Any]:
        return {"count": len(docs)}

    @requests(on="/replace")
    def replace(self, docs: DocumentArray) -> DocumentArray:
        return DocumentArray([Document(id="new", text="fresh")])

    @requests(on="/embed")
    def embed(self, docs: DocumentArray) -> None:
        for doc in docs:
            doc.embedding = [0.5, 0.25]
            doc.text = "embedded"

    @requests(on="/crash")
    def crash(self, docs: DocumentArray) -> None:
        raise ValueError("cannot shop today")

    @requests(on="/wrong")
    def wrong(self, docs: DocumentArray) -> int:
        return 42


class OnlyIndex(Executor):
    @requests(on="/index")
    def index(self, docs: DocumentArray) -> None:
        for doc in docs:
            doc.text = "indexed"


class Default(Executor):
    @requests
    def anything(self, docs: DocumentArray) -> None:
        for doc in docs:
            doc.text = "default"


def request(
    endpoint: str,
    *texts: str,
    target: str = "",
    fields: tuple[str, ...] = (),
    last_hop: bool = False,
    parameters: dict[str, Any] | None = None,
) -> bytes:
    message = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(
            request_id="r1",
            endpoint=endpoint,
            target_executor=target,
            fields=fields,
            last_hop=last_hop,
        )
    )
    if parameters:
        message.parameters.update(parameters)
    for i, text in enumerate(texts):
        message.docs.add(id=f"d{i}", text=text)
    return message.SerializeToString()


def process_raw(executor: Executor, data: bytes, name: str = "shop") -> bytes:
    """``ExecutorRuntime.process`` on ``data``: the answer's bytes."""
    runtime = ExecutorRuntime(executor, name=name)
    try:
        return run(runtime.process(data))
    finally:
        runtime.close()


def process(executor: Executor, data: bytes, name: str = "shop") -> data_request_pb2.DataRequest:
    return data_request_pb2.DataRequest.FromString(process_raw(executor, data, name))


def test_the_endpoint_changes_the_documents_of_the_answer() -> None:
    answer = process(Shop(), request("/upper", "a", "b"))
    assert [d.text for d in answer.docs] == ["A", "B"]
    assert answer.header.request_id == "r1"
    assert answer.status.code == data_request_pb2.Status.OK


def test_parameters_reach_the_endpoint_with_the_executors_own_overrides() -> None:
    parameters = {"suffix": "!", "shop__suffix": "?", "other__suffix": "x"}
    answer = process(Shop(), request("/upper", "a", parameters=parameters))
    assert answer.docs[0].text == "A?"


def test_unchanged_documents_answer_with_the_request_bytes_and_the_results() -> None:
    data = request("/count", "a", "b", "c")
    raw = process_raw(Shop(), data)
    assert raw.startswith(data)  # the documents were not re-encoded
    answer = data_request_pb2.DataRequest.FromString(raw)
    assert dict(answer.results["shop"]) == {"count": 3}
    assert [d.text for d in answer.docs] == ["a", "b", "c"]


def test_returned_documents_replace_the_requests() -> None:
    answer = process(Shop(), request("/replace", "a", "b"))
    assert [(d.id, d.text) for d in answer.docs] == [("new", "fresh")]


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (Shop, request("/upper", "a", target="someone-else")),
        (OnlyIndex, request("/search", "a")),  # not served, and no default endpoint
    ],
    ids=["another-executor", "unserved-endpoint"],
)
def test_requests_not_for_this_executor_come_back_byte_for_byte(
    cls: type[Executor], data: bytes
) -> None:
    assert process_raw(cls(), data) == data


def test_a_request_that_already_failed_comes_back_byte_for_byte() -> None:
    failed = data_request_pb2.DataRequest.FromString(request("/upper", "a"))
    failed.status.code = data_request_pb2.Status.ERROR
    data = failed.SerializeToString()
    assert process_raw(Shop(), data) == data


def test_the_default_endpoint_serves_endpoints_without_their_own() -> None:
    assert process(Default(), request("/whatever", "a")).docs[0].text == "default"
    assert process(Default(), request("", "a")).docs[0].text == "default"


def test_an_exception_in_the_endpoint_is_an_error_status_naming_the_executor() -> None:
    answer = process(Shop(), request("/crash", "a"))
    status = answer.status
    assert status.code == data_request_pb2.Status.ERROR
    assert (status.executor, status.endpoint) == ("shop", "/crash")
    assert (status.exception_type, status.message) == ("ValueError", "cannot shop today")
    assert [d.text for d in answer.docs] == ["a"]


class LetsACancellationOut(Executor):
    @requests(on="/cancelled")
    async def cancelled(self, docs: DocumentArray) -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()  # e.g. a shared connection's task, cancelled by its owner
        await future


def test_a_cancellation_the_method_lets_out_is_an_error_status_not_a_hang() -> None:
    status = process(LetsACancellationOut(), request("/cancelled", "a")).status
    assert status.code == data_request_pb2.Status.ERROR
    assert status.exception_type == "RuntimeError"
    assert "raised asyncio.CancelledError" in status.message and "/cancelled" in status.message


def test_a_return_value_of_the_wrong_type_is_an_error_status_naming_the_endpoint() -> None:
    status = process(Shop(), request("/wrong", "a")).status
    assert status.exception_type == "TypeError"
    assert "/wrong" in status.message and "returned int" in status.message


def test_the_last_hop_keeps_only_the_requested_fields() -> None:
    answer = process(Shop(), request("/embed", "a", fields=("text",), last_hop=True))
    [doc] = answer.docs
    assert doc.text == "embedded" and not doc.HasField("embedding")


def test_fields_on_an_inner_hop_keep_every_field() -> None:
    [doc] = process(Shop(), request("/embed", "a", fields=("text",))).docs
    assert doc.text == "embedded" and doc.HasField("embedding")


def test_an_array_whose_bytes_and_shape_disagree_is_a_bad_request() -> None:
    message = data_request_pb2.DataRequest.FromString(request("/upper"))
    message.docs.add(id="x").embedding.CopyFrom(
        document_pb2.NdArray(buffer=b"\x00" * 3, dtype="<f4", shape=[2])
    )
    with pytest.raises(BadRequestError, match="'shop'"):
        process_raw(Shop(), message.SerializeToString())
