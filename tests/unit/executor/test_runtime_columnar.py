"""``ExecutorRuntime.process`` with documents in the columnar layout, and the old row layout
still served."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from meshflow import Document, DocumentArray, Executor, dynamic_batching, requests
from meshflow.client.messages import build_request
from meshflow.document.columnar import documents_from_request
from meshflow.errors import BadRequestError
from meshflow.executor.runtime import ExecutorRuntime
from meshflow.proto.v1 import data_request_pb2, document_pb2


class Touch(Executor):
    """Changes every document as real executors do: text and embedding."""

    @requests(on="/async")
    async def touch_async(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.text += "x"
            doc.embedding = doc.embedding + 1.0  # type: ignore[operator]

    @requests(on="/sync")
    def touch_sync(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.text += "x"
            doc.embedding = doc.embedding + 1.0  # type: ignore[operator]

    @requests(on="/bulk")
    def bulk(self, docs: DocumentArray, **kwargs: Any) -> None:
        docs.embeddings = docs.embeddings + 1.0  # type: ignore[operator]

    @requests(on="/read")
    def read(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        total = float(sum(doc.embedding.sum() for doc in docs))  # type: ignore[union-attr]
        return {"total": total}

    @requests(on="/tag")
    def tag(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.tags["seen"] = True

    @requests(on="/batched")
    @dynamic_batching(preferred_batch_size=8, timeout=5)
    def batched(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.text += "b"


def process_raw(data: bytes) -> bytes:
    async def go() -> bytes:
        runtime = ExecutorRuntime(Touch(), name="touch")
        try:
            return await asyncio.wait_for(runtime.process(data), 10)
        finally:
            runtime.close()

    return asyncio.run(go())


def docs_of(n: int) -> DocumentArray:
    return DocumentArray(
        Document(id=f"d{i}", text="t", embedding=np.full(4, i, dtype=np.float32)) for i in range(n)
    )


@pytest.mark.parametrize("endpoint", ["/async", "/sync", "/bulk"])
def test_a_columnar_request_is_answered_in_columns(endpoint: str) -> None:
    _, data = build_request(endpoint, docs_of(3))
    answer = data_request_pb2.DataRequest.FromString(process_raw(data))
    assert answer.HasField("columns") and not answer.docs
    docs = documents_from_request(answer)
    assert docs.ids == ["d0", "d1", "d2"]
    assert docs.embeddings is not None
    assert docs.embeddings.tolist() == [[i + 1.0] * 4 for i in range(3)]
    assert docs.texts == (["t"] * 3 if endpoint == "/bulk" else ["tx"] * 3)


def test_an_untouched_column_is_copied_as_it_came() -> None:
    _, data = build_request("/bulk", docs_of(2))
    received = data_request_pb2.DataRequest.FromString(data)
    answer = data_request_pb2.DataRequest.FromString(process_raw(data))
    assert answer.columns.texts == received.columns.texts
    assert answer.columns.embeddings != received.columns.embeddings


def test_read_only_endpoints_answer_with_the_request_bytes() -> None:
    _, data = build_request("/read", docs_of(3))
    raw = process_raw(data)
    assert raw.startswith(data)  # nothing re-encoded
    answer = data_request_pb2.DataRequest.FromString(raw)
    assert dict(answer.results["touch"]) == {"total": 12.0}


def test_tags_set_by_the_endpoint_travel_back() -> None:
    _, data = build_request("/tag", docs_of(2))
    answer = data_request_pb2.DataRequest.FromString(process_raw(data))
    docs = documents_from_request(answer)
    assert [d.tags for d in docs] == [{"seen": True}] * 2
    assert answer.columns.HasField("embeddings")  # the embeddings stay one column


def test_batched_columnar_requests_are_answered_in_columns() -> None:
    async def go() -> list[data_request_pb2.DataRequest]:
        runtime = ExecutorRuntime(Touch(), name="touch")
        try:
            datas = [build_request("/batched", docs_of(2))[1] for _ in range(3)]
            raw = await asyncio.wait_for(asyncio.gather(*(runtime.process(d) for d in datas)), 10)
            return [data_request_pb2.DataRequest.FromString(r) for r in raw]
        finally:
            runtime.close()

    for answer in asyncio.run(go()):
        docs = documents_from_request(answer)
        assert docs.texts == ["tb", "tb"]
        assert docs.embeddings is not None and docs.embeddings.tolist() == [[0.0] * 4, [1.0] * 4]


@pytest.mark.parametrize("endpoint", ["/async", "/sync"])
def test_old_layout_requests_are_still_served_in_the_old_layout(endpoint: str) -> None:
    # Built by hand, as a client before the columnar layout did.
    request = data_request_pb2.DataRequest(header=data_request_pb2.Header(endpoint=endpoint))
    for i in range(2):
        pb = request.docs.add(id=f"old{i}", text="row")
        pb.embedding.CopyFrom(
            document_pb2.NdArray(
                buffer=np.full(3, i, dtype="<f4").tobytes(), dtype="<f4", shape=[3]
            )
        )
    answer = data_request_pb2.DataRequest.FromString(process_raw(request.SerializeToString()))
    assert not answer.HasField("columns")
    assert [(d.id, d.text) for d in answer.docs] == [("old0", "rowx"), ("old1", "rowx")]
    assert np.frombuffer(answer.docs[1].embedding.buffer, "<f4").tolist() == [2.0] * 3


def test_the_last_hop_drops_unasked_columns() -> None:
    request = data_request_pb2.DataRequest()
    request.ParseFromString(build_request("/sync", docs_of(2))[1])
    request.header.fields.append("text")
    request.header.last_hop = True
    answer = data_request_pb2.DataRequest.FromString(process_raw(request.SerializeToString()))
    assert list(answer.columns.texts) == ["tx", "tx"]
    assert list(answer.columns.ids) == ["d0", "d1"]
    assert not answer.columns.HasField("embeddings")


def test_columns_that_do_not_fit_are_a_bad_request() -> None:
    request = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(endpoint="/sync"),
        columns=document_pb2.DocumentColumns(ids=["a", "b"], texts=["only one"]),
    )
    with pytest.raises(BadRequestError, match="texts holds 1 values for 2 documents"):
        process_raw(request.SerializeToString())
