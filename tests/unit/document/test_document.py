from __future__ import annotations

import pickle
import time

import numpy as np
import pytest

import meshflow.document
from meshflow.document import Document, DocumentArray


def test_package_exports_exactly_the_public_names() -> None:
    assert meshflow.document.__all__ == ["Document", "DocumentArray", "score_is_ascending"]


def test_id_defaults_to_a_fresh_uuid4_hex() -> None:
    a, b = Document(), Document()
    assert len(a.id) == 32
    int(a.id, 16)
    assert a.id != b.id


def test_explicit_id_is_kept() -> None:
    assert Document(id="abc").id == "abc"


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Document("abc")  # type: ignore[call-arg]


def test_defaults_are_empty() -> None:
    doc = Document()
    assert doc.text == ""
    assert doc.blob == b""
    assert doc.tensor is None
    assert doc.embedding is None
    assert doc.uri == ""
    assert doc.mime_type == ""
    assert doc.parent_id == ""
    assert doc.tags == {}
    assert doc.scores == {}
    assert len(doc.matches) == 0
    assert len(doc.chunks) == 0


def test_uses_slots() -> None:
    with pytest.raises(AttributeError):
        Document().colour = "red"  # type: ignore[attr-defined]


def test_lists_become_arrays() -> None:
    doc = Document(tensor=[[1, 2], [3, 4]], embedding=[0.5, 1.5])
    assert isinstance(doc.tensor, np.ndarray)
    assert doc.tensor.shape == (2, 2)
    assert isinstance(doc.embedding, np.ndarray)
    assert doc.embedding.dtype == np.float64


def test_setting_a_list_attribute_converts_it_to_an_array() -> None:
    doc = Document()
    doc.embedding = [1.0, 2.0]
    doc.tensor = [[1], [2]]
    assert isinstance(doc.embedding, np.ndarray)
    assert isinstance(doc.tensor, np.ndarray)
    doc.embedding = None
    assert doc.embedding is None


def test_arrays_of_any_dtype_and_shape_are_kept_as_given() -> None:
    tensor = np.zeros((2, 3, 4), dtype=np.uint8)
    doc = Document(tensor=tensor)
    assert doc.tensor is tensor


def test_tags_and_scores_are_copied_from_the_arguments() -> None:
    tags = {"a": 1}
    scores = {"cosine": 0.5}
    doc = Document(tags=tags, scores=scores)
    doc.tags["b"] = 2
    doc.scores["dot"] = 1.0
    assert tags == {"a": 1}
    assert scores == {"cosine": 0.5}


def test_matches_and_chunks_accept_any_iterable_of_documents() -> None:
    child = Document(text="child")
    doc = Document(matches=[child], chunks=(d for d in [child]))
    assert isinstance(doc.matches, DocumentArray)
    assert isinstance(doc.chunks, DocumentArray)
    assert doc.matches[0] is child
    assert doc.chunks[0] is child


def test_matches_given_as_a_document_array_are_kept_as_is() -> None:
    matches = DocumentArray([Document()])
    assert Document(matches=matches).matches is matches


def test_matches_setter_converts_lists() -> None:
    doc = Document()
    doc.matches = [Document(), Document()]
    assert isinstance(doc.matches, DocumentArray)
    assert len(doc.matches) == 2
    doc.chunks = None
    assert len(doc.chunks) == 0


def test_lazily_created_matches_persist() -> None:
    doc = Document()
    doc.matches.append(Document(id="m"))
    assert doc.matches.ids == ["m"]


def test_creating_ten_thousand_documents_is_fast() -> None:
    start = time.perf_counter()
    docs = [Document(text="x") for _ in range(10_000)]
    elapsed = time.perf_counter() - start
    assert len(docs) == 10_000
    assert elapsed < 1.0


def test_repr_shows_id_and_only_non_empty_fields() -> None:
    doc = Document(id="d1", text="hello", embedding=np.zeros(8, dtype=np.float32))
    text = repr(doc)
    assert text == "<Document id='d1' text='hello' embedding=<float32 (8,)>>"


def test_repr_summarizes_long_and_nested_fields() -> None:
    doc = Document(
        id="d1",
        text="x" * 500,
        blob=b"12345",
        tags={"k": "v"},
        matches=[Document(), Document()],
    )
    text = repr(doc)
    assert len(text) < 200
    assert "blob=<5 bytes>" in text
    assert "matches=<2 documents>" in text
    assert "tags={'k': 'v'}" in text
    assert "chunks" not in text
    assert "tensor" not in text


def test_equal_documents_compare_equal() -> None:
    def make() -> Document:
        return Document(
            id="a",
            text="t",
            blob=b"b",
            tensor=np.arange(6).reshape(2, 3),
            embedding=np.ones(3),
            uri="u",
            mime_type="text/plain",
            tags={"x": [1, {"y": None}]},
            scores={"cosine": 0.5},
            matches=[Document(id="m")],
            chunks=[Document(id="c")],
            parent_id="p",
        )

    assert make() == make()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "other"),
        ("text", "other"),
        ("blob", b"other"),
        ("tensor", np.zeros(3)),
        ("embedding", np.zeros(3)),
        ("uri", "other"),
        ("mime_type", "other"),
        ("tags", {"x": 2}),
        ("scores", {"cosine": 0.1}),
        ("matches", [Document(id="other")]),
        ("chunks", [Document(id="other")]),
        ("parent_id", "other"),
    ],
)
def test_documents_differing_in_one_field_are_not_equal(field: str, value: object) -> None:
    def make() -> Document:
        return Document(
            id="a",
            text="t",
            blob=b"b",
            tensor=np.ones(3),
            embedding=np.ones(3),
            uri="u",
            mime_type="m",
            tags={"x": 1},
            scores={"cosine": 0.5},
            matches=[Document(id="m")],
            chunks=[Document(id="c")],
            parent_id="p",
        )

    changed = make()
    setattr(changed, field, value)
    assert make() != changed


def test_array_present_on_one_side_only_is_not_equal() -> None:
    assert Document(id="a", embedding=[1.0]) != Document(id="a")


def test_untouched_and_empty_matches_are_equal() -> None:
    a, b = Document(id="a"), Document(id="a")
    _ = a.matches
    assert a == b


def test_document_is_not_equal_to_other_types() -> None:
    assert Document(id="a") != "a"


def test_documents_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Document())


def test_copy_is_equal_but_independent() -> None:
    embedding = np.ones(4)
    doc = Document(
        id="a", embedding=embedding, tags={"k": 1}, scores={"s": 1.0}, matches=[Document()]
    )
    copy = doc.copy()
    assert copy == doc
    assert copy is not doc
    assert copy.embedding is embedding
    copy.tags["k"] = 2
    copy.scores["s"] = 2.0
    copy.matches.append(Document())
    assert doc.tags == {"k": 1}
    assert doc.scores == {"s": 1.0}
    assert len(doc.matches) == 1
    assert copy.matches[0] is doc.matches[0]


def test_document_survives_pickling() -> None:
    doc = Document(text="t", embedding=np.arange(3.0), tags={"a": [1]}, chunks=[Document()])
    assert pickle.loads(pickle.dumps(doc)) == doc
