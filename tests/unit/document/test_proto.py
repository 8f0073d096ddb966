from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from meshflow.document import Document, DocumentArray
from meshflow.document.proto import (
    dict_to_struct,
    document_from_proto,
    document_to_proto,
    documents_from_proto,
    documents_to_proto,
    struct_to_dict,
)
from meshflow.proto.v1 import document_pb2


def round_trip(doc: Document) -> Document:
    pb = document_pb2.Document()
    document_to_proto(doc, pb)
    # Through bytes too, as on the wire.
    return document_from_proto(document_pb2.Document.FromString(pb.SerializeToString()))


def test_every_scalar_field_round_trips() -> None:
    doc = Document(
        id="a",
        parent_id="p",
        text="héllo",
        blob=b"\x00\xff",
        uri="s3://bucket/key",
        mime_type="text/plain",
        scores={"cosine": 0.25, "dot": -3.5},
    )
    back = round_trip(doc)
    assert back == doc
    assert back.scores == {"cosine": 0.25, "dot": -3.5}


def test_empty_document_sets_only_its_id() -> None:
    doc = Document(id="only-id")
    pb = document_pb2.Document()
    document_to_proto(doc, pb)
    assert [field.name for field, _ in pb.ListFields()] == ["id"]
    back = document_from_proto(pb)
    assert back == doc
    assert back.tensor is None
    assert back.embedding is None


def test_message_without_id_gets_a_fresh_id() -> None:
    doc = document_from_proto(document_pb2.Document(text="x"))
    assert len(doc.id) == 32


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int64", "uint8", "bool"])
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (2, 3, 4)])
def test_arrays_round_trip_with_dtype_and_shape(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    back = round_trip(Document(tensor=array, embedding=array))
    for got in (back.tensor, back.embedding):
        assert got is not None
        assert got.dtype == array.dtype
        assert got.shape == array.shape
        np.testing.assert_array_equal(got, array)


def test_big_endian_arrays_keep_their_byte_order_and_values() -> None:
    array = np.arange(6, dtype=">f4").reshape(2, 3)
    back = round_trip(Document(tensor=array))
    assert back.tensor is not None
    assert back.tensor.dtype.str == ">f4"
    np.testing.assert_array_equal(back.tensor, array)


def test_array_is_written_as_raw_bytes_with_dtype_string_and_shape() -> None:
    array = np.arange(6, dtype="<i2").reshape(3, 2)
    pb = document_pb2.Document()
    document_to_proto(Document(embedding=array), pb)
    assert pb.embedding.dtype == "<i2"
    assert list(pb.embedding.shape) == [3, 2]
    assert pb.embedding.buffer == array.tobytes()


def test_non_contiguous_arrays_are_written_in_c_order() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T[::2]
    back = round_trip(Document(tensor=array))
    assert back.tensor is not None
    np.testing.assert_array_equal(back.tensor, array)


def test_arrays_read_back_are_read_only_views() -> None:
    back = round_trip(Document(embedding=np.zeros(3, dtype=np.float32)))
    assert back.embedding is not None
    with pytest.raises(ValueError, match="read-only"):
        back.embedding += 1
    back.embedding = back.embedding + 1
    assert back.embedding.tolist() == [1, 1, 1]


def test_documents_read_and_left_alone_are_unchanged_on_wire() -> None:
    from meshflow.document.proto import unchanged_on_wire
    from meshflow.proto.v1 import data_request_pb2

    request = data_request_pb2.DataRequest()
    documents_to_proto(
        [Document(id=str(i), text="t", embedding=np.ones(2)) for i in range(3)], request.docs
    )
    docs = documents_from_proto(request.docs)
    assert [d.text for d in docs] == ["t"] * 3 and unchanged_on_wire(docs)
    docs[1].text = "t"  # equal, but a new assignment: encoded again, to be safe
    assert not unchanged_on_wire(docs)
    for change in (
        lambda d: setattr(d, "embedding", d.embedding * 2),
        lambda d: d.tags.update(a=1),
        lambda d: d.matches.append(Document()),
        lambda d: d.scores.update(s=1.0),
    ):
        docs = documents_from_proto(request.docs)
        change(docs[0])
        assert not unchanged_on_wire(docs)
    docs = documents_from_proto(request.docs)
    del docs[0]
    assert not unchanged_on_wire(docs)
    docs = documents_from_proto(request.docs)
    docs.append(Document())
    assert not unchanged_on_wire(docs)


def test_str_and_datetime_arrays_round_trip() -> None:
    for array in (np.array(["a", "bc"]), np.array(["2024-01-01"], dtype="datetime64[s]")):
        back = round_trip(Document(tensor=array))
        assert back.tensor is not None
        assert back.tensor.dtype == array.dtype
        np.testing.assert_array_equal(back.tensor, array)


def test_object_arrays_are_rejected_with_a_clear_message() -> None:
    doc = Document(id="obj", tensor=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"tensor of Document 'obj'.*dtype object"):
        document_to_proto(doc, document_pb2.Document())


def test_structured_arrays_are_rejected() -> None:
    doc = Document(embedding=np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]))
    with pytest.raises(ValueError, match="embedding"):
        document_to_proto(doc, document_pb2.Document())


def test_buffer_not_matching_shape_raises_value_error() -> None:
    pb = document_pb2.Document(
        id="bad", tensor=document_pb2.NdArray(buffer=b"\x00" * 12, dtype="<f4", shape=[2, 2])
    )
    with pytest.raises(ValueError, match="cannot read the tensor of Document 'bad'"):
        document_from_proto(pb)


@pytest.mark.parametrize("dtype", ["not-a-dtype", "|O"])
def test_unreadable_dtype_raises_value_error(dtype: str) -> None:
    pb = document_pb2.Document(
        id="bad", embedding=document_pb2.NdArray(buffer=b"\x00" * 8, dtype=dtype, shape=[1])
    )
    with pytest.raises(ValueError, match="cannot read the embedding of Document 'bad'"):
        document_from_proto(pb)


def test_tags_with_nested_values_round_trip() -> None:
    tags: dict[str, Any] = {
        "str": "x",
        "float": 1.5,
        "int": 3,
        "true": True,
        "false": False,
        "none": None,
        "list": [1, "a", None, [True, {"deep": []}]],
        "dict": {"nested": {"k": [1.0, 2.0]}, "empty": {}},
        "empty_list": [],
        "numpy": np.float32(0.5),
    }
    back = round_trip(Document(tags=tags))
    assert back.tags == tags
    assert back.tags["true"] is True
    assert back.tags["none"] is None
    assert back.tags["dict"]["empty"] == {}


def test_tag_numbers_come_back_as_floats() -> None:
    back = round_trip(Document(tags={"n": 7, "nested": [1]}))
    assert back.tags == {"n": 7.0, "nested": [1.0]}
    assert isinstance(back.tags["n"], float)


def test_tuples_in_tags_come_back_as_lists() -> None:
    assert round_trip(Document(tags={"t": (1, "a")})).tags == {"t": [1.0, "a"]}


def test_tags_that_are_not_json_like_raise_type_error_with_their_path() -> None:
    doc = Document(tags={"outer": [1, {"bad": {1, 2}}]})
    with pytest.raises(TypeError, match=r"set at tags\['outer'\]\[1\]\['bad'\]"):
        document_to_proto(doc, document_pb2.Document())


def test_non_str_tag_keys_raise_type_error() -> None:
    with pytest.raises(TypeError, match=r"key 1 \(int\) in tags\['a'\]: keys must be str"):
        document_to_proto(Document(tags={"a": {1: "x"}}), document_pb2.Document())


def test_nested_matches_and_chunks_round_trip() -> None:
    grandchild = Document(id="gc", embedding=np.ones(2, dtype=np.float16), tags={"d": 2.0})
    chunk = Document(id="c", parent_id="root", text="part", chunks=[grandchild])
    match = Document(id="m", scores={"cosine": 0.9}, matches=[Document(id="mm")])
    doc = Document(id="root", chunks=[chunk], matches=[match])
    back = round_trip(doc)
    assert back == doc
    assert back.chunks[0].chunks[0].embedding is not None
    assert back.chunks[0].chunks[0].embedding.dtype == np.float16
    assert back.matches[0].matches.ids == ["mm"]


def test_documents_append_to_a_repeated_field_and_read_back() -> None:
    docs = DocumentArray(Document(id=f"d{i}", embedding=np.full(3, i)) for i in range(4))
    message = document_pb2.DocumentList()
    message.docs.add(id="already-there")
    documents_to_proto(docs, message.docs)
    assert [pb.id for pb in message.docs] == ["already-there", "d0", "d1", "d2", "d3"]
    back = documents_from_proto(message.docs)
    assert isinstance(back, DocumentArray)
    assert back[1:] == docs


def test_documents_to_proto_accepts_any_iterable() -> None:
    message = document_pb2.DocumentList()
    documents_to_proto((Document(id=i) for i in "ab"), message.docs)
    assert documents_from_proto(message.docs).ids == ["a", "b"]


def test_dict_to_struct_and_back() -> None:
    parameters = {"limit": 10, "fields": ["text", None], "filter": {"on": True}, "empty": {}}
    struct = dict_to_struct(parameters)
    assert struct.fields["limit"].number_value == 10.0
    assert struct_to_dict(struct) == parameters
    assert struct_to_dict(dict_to_struct({})) == {}


def test_dict_to_struct_names_the_offending_value() -> None:
    with pytest.raises(TypeError, match=r"cannot store bytes at \['a'\]\[0\]"):
        dict_to_struct({"a": [b"raw"]})
