"""Documents in the columnar wire layout through a real Flow (both meshes), and the old row
layout still served."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest

from meshflow import Document, DocumentArray, Flow
from meshflow.proto.v1 import data_request_pb2, document_pb2
from meshflow.wire import GATEWAY_POST

StartFlow = Callable[[Flow], Flow]


def docs_of(n: int, dim: int = 16) -> DocumentArray:
    return DocumentArray(
        Document(id=f"d{i}", text="t", embedding=np.full(dim, i, dtype=np.float32))
        for i in range(n)
    )


def test_async_and_sync_executors_change_every_document(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="columnar_executors:Touch")
        .add(uses="columnar_executors:TouchSync")
        .add(uses="columnar_executors:Shape", name="shape")
    )
    [response] = f.post("/", docs_of(64), return_responses=True)
    docs = response.docs
    assert docs.ids == [f"d{i}" for i in range(64)]
    assert docs.texts == ["tas"] * 64
    assert docs.embeddings is not None
    assert docs.embeddings.tolist() == [[i + 2.0] * 16 for i in range(64)]
    # The last executor saw one read-only (64, 16) column.
    assert response.results["shape"] == {"shape": [64.0, 16.0], "writeable": False}


def test_nested_matches_and_chunks_with_embeddings_come_back(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="columnar_executors:Neighbours"))
    docs = f.post("/", docs_of(3, dim=4))
    assert [m.id for m in docs[2].matches] == ["d2-m0", "d2-m1"]
    assert docs[2].matches[1].embedding.tolist() == [2.0] * 4  # type: ignore[union-attr]
    assert docs[2].matches[1].scores == {"dot": 1.0}
    assert docs[1].chunks[0].tensor.dtype == np.uint8  # type: ignore[union-attr]
    assert docs.embeddings is not None and docs.embeddings.shape == (3, 4)


@pytest.mark.mesh("direct")
def test_mixed_dtypes_and_shapes_in_one_request_are_served(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="columnar_executors:Touch"))
    sent = DocumentArray(
        [
            Document(id="f4", embedding=np.zeros(3, dtype=np.float32)),
            Document(id="f8", embedding=np.zeros(3, dtype=np.float64)),
            Document(id="long", embedding=np.zeros(5, dtype=np.float32)),
        ]
    )
    docs = f.post("/", sent)
    assert [(d.embedding.dtype.str, d.embedding.tolist()) for d in docs] == [  # type: ignore[union-attr]
        ("<f4", [1.0] * 3),
        ("<f8", [1.0] * 3),
        ("<f4", [1.0] * 5),
    ]


@pytest.mark.mesh("direct")
def test_a_join_merges_columnar_answers(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="columnar_executors:Touch", name="left", needs="gateway")
        .add(uses="columnar_executors:TouchSync", name="right", needs="gateway")
        .add(uses="columnar_executors:Touch", name="join", needs=["left", "right"])
    )
    docs = f.post("/", docs_of(4, dim=2))
    assert docs.ids == ["d0", "d1", "d2", "d3"]
    # Later non-empty fields win in a merge: the right branch's text, then the join's change.
    assert docs.texts == ["tsa"] * 4
    assert docs.embeddings is not None and docs.embeddings.tolist() == [
        [i + 2.0] * 2 for i in range(4)
    ]


def test_old_layout_requests_are_served_in_the_old_layout(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow().add(uses="columnar_executors:Touch").add(uses="columnar_executors:TouchSync")
    )
    request = data_request_pb2.DataRequest(header=data_request_pb2.Header(endpoint="/"))
    pb = request.docs.add(id="old", text="row")
    pb.embedding.CopyFrom(
        document_pb2.NdArray(buffer=np.zeros(2, dtype="<f4").tobytes(), dtype="<f4", shape=[2])
    )
    with grpc.insecure_channel(f"127.0.0.1:{f.port}") as channel:
        raw = channel.unary_unary(GATEWAY_POST)(request.SerializeToString(), timeout=20)
    answer = data_request_pb2.DataRequest.FromString(raw)
    assert not answer.HasField("columns")
    assert [(d.id, d.text) for d in answer.docs] == [("old", "rowas")]
    assert np.frombuffer(answer.docs[0].embedding.buffer, "<f4").tolist() == [2.0, 2.0]
