"""The columnar wire layout (``DataRequest.columns``): round trips, views, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from meshflow import Document, DocumentArray
from meshflow.document.columnar import (
    columns_to_bytes,
    columns_to_proto,
    documents_from_request,
    documents_to_request,
    prune_columns,
    request_bytes,
    to_rows,
    unchanged_columns,
)
from meshflow.proto.v1 import data_request_pb2, document_pb2


def wire(docs: DocumentArray, *, columnar: bool = True) -> DocumentArray:
    """``docs`` through a serialized DataRequest and back."""
    request = data_request_pb2.DataRequest()
    documents_to_request(docs, request, columnar=columnar)
    received = data_request_pb2.DataRequest.FromString(request.SerializeToString())
    assert received.HasField("columns") is columnar
    return documents_from_request(received)


def full_document(i: int) -> Document:
    return Document(
        id=f"d{i}",
        parent_id=f"p{i}",
        text=f"text {i}",
        blob=bytes([i, 0, 255]),
        tensor=np.arange(6, dtype=np.int16).reshape(2, 3) + i,
        embedding=np.linspace(0, 1, 4, dtype=np.float32) + i,
        uri=f"file:///{i}.png",
        mime_type="image/png",
        tags={"n": i, "nested": {"list": [1, "a", None, True]}},
        scores={"cosine": 0.5 + i},
        matches=[Document(id=f"m{i}", embedding=[1.0, 2.0], scores={"dot": 3.0})],
        chunks=[Document(id=f"c{i}", text="chunk", parent_id=f"d{i}", tensor=[[1, 2]])],
    )


def test_every_field_round_trips() -> None:
    docs = DocumentArray(full_document(i) for i in range(3))
    back = wire(docs)
    assert back == docs
    assert back[1].tensor.dtype == np.int16 and back[1].tensor.shape == (2, 3)
    assert back[2].tags == {"n": 2.0, "nested": {"list": [1.0, "a", None, True]}}


def test_plain_documents_travel_as_columns_without_rest() -> None:
    docs = DocumentArray(
        Document(id=str(i), text="t", embedding=np.full(8, i, dtype=np.float32)) for i in range(5)
    )
    request = data_request_pb2.DataRequest()
    documents_to_request(docs, request)
    columns = request.columns
    assert list(columns.ids) == ["0", "1", "2", "3", "4"]
    assert list(columns.texts) == ["t"] * 5
    assert (columns.embeddings.dtype, list(columns.embeddings.shape)) == ("<f4", [5, 8])
    assert len(columns.embeddings.buffer) == 5 * 8 * 4
    assert not columns.rest and not columns.parent_ids and not columns.HasField("tensors")


def test_embeddings_are_a_read_only_view_of_the_column_without_building_documents() -> None:
    docs = wire(DocumentArray(Document(embedding=np.ones(4, dtype=np.float32)) for _ in range(3)))
    matrix = docs.embeddings
    assert matrix is not None and matrix.shape == (3, 4)
    assert docs.embeddings is matrix  # the column itself, not a stacked copy
    assert not matrix.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        matrix += 1
    assert len(docs) == 3
    assert docs._items is None  # no Document was built


def test_rows_are_views_of_the_column_and_it_stays_one_after_iterating() -> None:
    docs = wire(DocumentArray(Document(embedding=[i, i]) for i in range(4)))
    matrix = docs.embeddings
    assert matrix is not None
    rows = [doc.embedding for doc in docs]
    assert all(np.shares_memory(row, matrix) for row in rows if row is not None)
    assert docs.embeddings is matrix
    with pytest.raises(ValueError, match="read-only"):
        docs[0].embedding[0] = 5  # type: ignore[index]
    docs[0].embedding = [9, 9]  # assignment works; the column is then stacked again
    stacked = docs.embeddings
    assert stacked is not matrix and stacked is not None
    assert stacked.tolist() == [[9, 9], [1, 1], [2, 2], [3, 3]]


def test_bulk_assignment_replaces_a_column_without_building_documents() -> None:
    docs = wire(
        DocumentArray(Document(text=str(i), embedding=np.zeros(3, np.float32)) for i in range(2))
    )
    docs.embeddings = docs.embeddings + 1.0  # type: ignore[operator]
    docs.texts = [t + "x" for t in docs.texts]
    docs.blobs = [b"a", b"b"]
    assert docs._items is None
    back = wire(docs)
    assert back.texts == ["0x", "1x"] and back.blobs == [b"a", b"b"]
    assert back.embeddings is not None and back.embeddings.tolist() == [[1, 1, 1]] * 2
    with pytest.raises(ValueError, match="from 3 values"):
        docs.texts = ["a", "b", "c"]
    with pytest.raises(ValueError, match="0-d"):
        docs.embeddings = np.float32(1)
    docs.embeddings = None
    assert docs.embeddings is None and wire(docs)[0].embedding is None


def test_documents_built_after_bulk_assignment_see_it() -> None:
    docs = wire(DocumentArray(Document(embedding=[0.0]) for _ in range(2)))
    docs.embeddings = np.array([[1.0], [2.0]])
    docs.texts = ["a", "b"]
    assert [(d.text, d.embedding.tolist()) for d in docs] == [("a", [1.0]), ("b", [2.0])]  # type: ignore[union-attr]
    assert wire(docs).embeddings.tolist() == [[1.0], [2.0]]  # type: ignore[union-attr]


def test_nested_matches_and_chunks_with_embeddings_round_trip() -> None:
    query = Document(id="q", embedding=np.ones(3, dtype=np.float32))
    query.matches = [
        Document(id=f"m{i}", embedding=np.full(3, i, dtype=np.float32), scores={"cosine": i})
        for i in range(3)
    ]
    query.chunks = [Document(id="c", embedding=np.zeros(2), tensor=np.eye(2))]
    query.chunks[0].matches = [Document(id="cm", embedding=[0.5, 0.5])]
    back = wire(DocumentArray([query, Document(id="other", embedding=np.ones(3, np.float32))]))
    assert back[0] == query
    assert back[0].matches.embeddings.tolist() == [[0.0] * 3, [1.0] * 3, [2.0] * 3]  # type: ignore[union-attr]
    assert back[0].chunks[0].matches[0].embedding.tolist() == [0.5, 0.5]  # type: ignore[union-attr]
    assert back.embeddings is not None and back.embeddings.shape == (2, 3)  # still a column


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (np.zeros(4, dtype=np.float32), np.zeros(4, dtype=np.float64)),  # dtypes differ
        (np.zeros(4, dtype=np.float32), np.zeros(5, dtype=np.float32)),  # shapes differ
        (np.zeros(4, dtype=np.float32), None),  # one has none
    ],
    ids=["mixed-dtypes", "mixed-shapes", "some-missing"],
)
def test_arrays_that_do_not_fit_one_column_travel_per_document(
    first: np.ndarray, second: np.ndarray | None
) -> None:
    docs = DocumentArray([Document(id="a", embedding=first), Document(id="b", embedding=second)])
    request = data_request_pb2.DataRequest()
    documents_to_request(docs, request)
    assert not request.columns.HasField("embeddings")
    assert request.columns.rest[0].HasField("embedding")
    back = documents_from_request(
        data_request_pb2.DataRequest.FromString(request.SerializeToString())
    )
    assert back == docs
    assert back[0].embedding.dtype == first.dtype  # type: ignore[union-attr]
    if second is not None:
        assert back[1].embedding.dtype == second.dtype  # type: ignore[union-attr]
        assert back[1].embedding.shape == second.shape  # type: ignore[union-attr]
    else:
        assert back[1].embedding is None
    if second is None or second.shape != first.shape:  # no 2-D view of these
        with pytest.raises(ValueError, match=r"different shapes|no embedding"):
            _ = back.embeddings


def test_unchanged_documents_are_told_apart_from_changed_ones() -> None:
    request = data_request_pb2.DataRequest()
    documents_to_request(
        DocumentArray(Document(text="t", embedding=[1.0]) for _ in range(3)), request
    )
    docs = documents_from_request(request)
    source = docs._columns
    assert source is not None
    assert unchanged_columns(docs, source)  # nothing built
    for _ in docs:
        pass
    assert unchanged_columns(docs, source)  # built and only read
    docs[1].text += "!"
    assert not unchanged_columns(docs, source)
    out = document_pb2.DocumentColumns()
    columns_to_proto(docs, out, source)
    # The untouched embedding column is copied as it came.
    assert out.embeddings == request.columns.embeddings
    assert list(out.texts) == ["t", "t!", "t"]


def test_tags_make_a_document_count_as_changed() -> None:
    request = data_request_pb2.DataRequest()
    documents_to_request(DocumentArray([Document(text="t")]), request)
    docs = documents_from_request(request)
    docs[0].tags["k"] = 1
    assert docs._columns is not None and not unchanged_columns(docs, docs._columns)


def test_an_empty_request_keeps_its_layout() -> None:
    request = data_request_pb2.DataRequest()
    documents_to_request(DocumentArray(), request)
    received = data_request_pb2.DataRequest.FromString(request.SerializeToString())
    assert received.HasField("columns")
    docs = documents_from_request(received)
    assert len(docs) == 0 and docs.embeddings is None and list(docs) == []


def test_documents_without_id_get_fresh_ids() -> None:
    columns = document_pb2.DocumentColumns(ids=["", "x"], texts=["a", "b"])
    docs = documents_from_request(data_request_pb2.DataRequest(columns=columns))
    ids = docs.ids
    assert ids[1] == "x" and len(ids[0]) == 32 and docs[0].id == ids[0]


def test_old_layout_requests_are_still_read() -> None:
    request = data_request_pb2.DataRequest()
    pb = request.docs.add(id="old", text="row")
    pb.embedding.buffer = np.ones(2, dtype="<f4").tobytes()
    pb.embedding.dtype = "<f4"
    pb.embedding.shape.append(2)
    docs = documents_from_request(
        data_request_pb2.DataRequest.FromString(request.SerializeToString())
    )
    assert docs._columns is None
    assert (docs[0].id, docs[0].text, docs[0].embedding.tolist()) == ("old", "row", [1.0, 1.0])  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (document_pb2.DocumentColumns(ids=["a", "b"], texts=["x"]), "texts holds 1 values"),
        (
            document_pb2.DocumentColumns(
                ids=["a"], embeddings=document_pb2.NdArray(buffer=b"1234", dtype="<f4", shape=[2])
            ),
            "first dimension",
        ),
        (
            document_pb2.DocumentColumns(
                ids=["a"], embeddings=document_pb2.NdArray(buffer=b"123", dtype="<f4", shape=[1])
            ),
            "cannot read column embeddings",
        ),
        (
            document_pb2.DocumentColumns(
                ids=["a"], embeddings=document_pb2.NdArray(buffer=b"1234", dtype="O", shape=[1])
            ),
            "not supported",
        ),
    ],
    ids=["short-column", "wrong-rows", "short-buffer", "object-dtype"],
)
def test_columns_that_do_not_fit_together_are_refused(
    columns: document_pb2.DocumentColumns, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        documents_from_request(data_request_pb2.DataRequest(columns=columns))


def test_a_request_in_both_layouts_is_refused() -> None:
    request = data_request_pb2.DataRequest(columns=document_pb2.DocumentColumns(ids=["a"]))
    request.docs.add(id="b")
    with pytest.raises(ValueError, match="both layouts"):
        documents_from_request(request)


def test_to_rows_moves_columns_into_docs() -> None:
    docs = DocumentArray(full_document(i) for i in range(2))
    request = data_request_pb2.DataRequest()
    documents_to_request(docs, request)
    to_rows(request)
    assert not request.HasField("columns") and len(request.docs) == 2
    assert documents_from_request(request) == docs


def test_prune_keeps_ids_and_the_fields_asked_for() -> None:
    request = data_request_pb2.DataRequest()
    documents_to_request(DocumentArray(full_document(i) for i in range(2)), request)
    prune_columns(request.columns, {"text", "matches", "matches.scores"})
    docs = documents_from_request(request)
    assert docs.ids == ["d0", "d1"] and docs.texts == ["text 0", "text 1"]
    assert docs.embeddings is None and docs[0].tags == {} and docs[0].blob == b""
    assert docs[0].matches[0].scores == {"dot": 3.0} and docs[0].matches[0].embedding is None
    assert not docs[0].chunks


def test_the_row_layout_is_still_written_on_request() -> None:
    docs = DocumentArray(full_document(i) for i in range(2))
    assert wire(docs, columnar=False) == docs


def test_request_bytes_are_the_serialized_request_with_its_columns() -> None:
    docs = DocumentArray(full_document(i) for i in range(3))
    header = data_request_pb2.Header(endpoint="/x")
    data = request_bytes(docs, data_request_pb2.DataRequest(header=header))
    message = data_request_pb2.DataRequest(header=header)
    documents_to_request(docs, message)
    assert data_request_pb2.DataRequest.FromString(data) == message
    assert documents_from_request(data_request_pb2.DataRequest.FromString(data)) == docs


def test_a_lazy_array_is_forwarded_from_its_received_bytes() -> None:
    request = data_request_pb2.DataRequest()
    documents_to_request(
        DocumentArray(Document(embedding=np.ones((2, 3))) for _ in range(4)), request
    )
    docs = documents_from_request(request)
    out = document_pb2.DocumentColumns.FromString(columns_to_bytes(docs))
    assert out == request.columns and docs._items is None
