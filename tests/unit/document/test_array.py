from __future__ import annotations

from collections.abc import MutableSequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from meshflow.document import Document, DocumentArray, score_is_ascending
from meshflow.document.array import LOWER_IS_BETTER


def make(*ids: str) -> DocumentArray:
    return DocumentArray(Document(id=i, text=f"text-{i}") for i in ids)


# -- construction -------------------------------------------------------------------------


def test_is_a_mutable_sequence() -> None:
    assert isinstance(DocumentArray(), MutableSequence)


def test_empty_constructor_makes_an_empty_array() -> None:
    da = DocumentArray()
    assert len(da) == 0
    assert not da


def test_constructor_takes_an_iterable_of_documents() -> None:
    docs = [Document(), Document()]
    da = DocumentArray(iter(docs))
    assert list(da) == docs
    assert da[0] is docs[0]


def test_constructor_takes_a_single_document() -> None:
    doc = Document()
    da = DocumentArray(doc)
    assert len(da) == 1
    assert da[0] is doc


def test_constructor_rejects_non_documents() -> None:
    with pytest.raises(TypeError, match="Documents only, not str"):
        DocumentArray(["abc"])  # type: ignore[list-item]


def test_empty_creates_n_fresh_documents() -> None:
    da = DocumentArray.empty(5)
    assert len(da) == 5
    assert len(set(da.ids)) == 5
    assert all(doc.text == "" for doc in da)


def test_repr_shows_length() -> None:
    assert repr(make("a", "b", "c")) == "<DocumentArray (length=3)>"


# -- indexing -----------------------------------------------------------------------------


def test_int_and_negative_indexing() -> None:
    da = make("a", "b", "c")
    assert da[0].id == "a"
    assert da[-1].id == "c"


def test_out_of_range_index_raises_index_error() -> None:
    with pytest.raises(IndexError, match="index 3 out of range for length 3"):
        make("a", "b", "c")[3]


def test_numpy_integers_index_like_ints() -> None:
    assert make("a", "b")[np.int64(1)].id == "b"  # type: ignore[call-overload]


def test_bad_index_type_raises_type_error() -> None:
    with pytest.raises(TypeError, match="not float"):
        make("a")[1.0]  # type: ignore[call-overload]


def test_slicing_returns_a_document_array_of_the_same_documents() -> None:
    da = make("a", "b", "c", "d")
    part = da[1:3]
    assert isinstance(part, DocumentArray)
    assert part.ids == ["b", "c"]
    assert part[0] is da[1]
    assert da[::-2].ids == ["d", "b"]


def test_indexing_by_id_returns_the_document() -> None:
    da = make("a", "b", "c")
    assert da["b"] is da[1]


def test_missing_id_raises_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="'nope'"):
        make("a")["nope"]


def test_id_lookup_follows_ids_changed_after_insertion() -> None:
    da = make("a", "b")
    assert da["a"].id == "a"
    da[0].id = "renamed"
    assert da["renamed"] is da[0]
    assert "a" not in da


def test_id_lookup_follows_reordering() -> None:
    da = make("a", "b", "c")
    assert da["c"] is da[2]
    da.insert(0, Document(id="z"))
    del da[1]
    assert da["c"] is da[2]
    da.reverse()
    assert da["c"] is da[0]


def test_duplicate_ids_resolve_to_the_first_document() -> None:
    first, second = Document(id="dup"), Document(id="dup")
    da = DocumentArray([Document(), first, second])
    assert da["dup"] is first


def test_setting_by_int_replaces_the_document() -> None:
    da = make("a", "b")
    da[-1] = Document(id="x")
    assert da.ids == ["a", "x"]


def test_setting_by_slice_replaces_a_range() -> None:
    da = make("a", "b", "c")
    da[0:2] = [Document(id="x")]
    assert da.ids == ["x", "c"]


def test_setting_a_slice_to_a_single_document_raises_type_error() -> None:
    with pytest.raises(TypeError):
        make("a")[0:1] = Document()  # type: ignore[call-overload]


def test_setting_by_id_replaces_the_document_with_that_id() -> None:
    da = make("a", "b", "c")
    da["b"] = Document(id="x")
    assert da.ids == ["a", "x", "c"]
    assert "b" not in da
    assert da["x"] is da[1]


def test_setting_a_missing_id_raises_key_error() -> None:
    da = make("a")
    with pytest.raises(KeyError, match="'b'"):
        da["b"] = Document()


def test_setting_a_non_document_raises_type_error() -> None:
    da = make("a")
    with pytest.raises(TypeError):
        da[0] = "x"  # type: ignore[call-overload]


def test_deleting_by_int_slice_and_id() -> None:
    da = make("a", "b", "c", "d", "e")
    del da[0]
    assert da.ids == ["b", "c", "d", "e"]
    del da[-1]
    assert da.ids == ["b", "c", "d"]
    del da[0:2]
    assert da.ids == ["d"]
    del da["d"]
    assert len(da) == 0


def test_deleting_a_missing_id_raises_key_error() -> None:
    with pytest.raises(KeyError, match="'zz'"):
        del make("a")["zz"]


def test_insert_append_extend() -> None:
    da = make("b")
    da.insert(0, Document(id="a"))
    da.append(Document(id="c"))
    da.extend(make("d", "e"))
    assert da.ids == ["a", "b", "c", "d", "e"]
    assert da["e"] is da[4]


def test_extend_with_itself_doubles_the_array() -> None:
    da = make("a", "b")
    da.extend(da)
    assert da.ids == ["a", "b", "a", "b"]


def test_append_rejects_non_documents() -> None:
    with pytest.raises(TypeError):
        DocumentArray().append("x")  # type: ignore[arg-type]


def test_inherited_mutable_sequence_methods_work() -> None:
    da = make("a", "b", "c")
    assert da.pop().id == "c"
    da.remove(da[0])
    assert da.ids == ["b"]
    da += make("d")
    assert da.ids == ["b", "d"]
    assert da.index(da[1]) == 1
    da.clear()
    assert len(da) == 0


def test_contains_a_document_or_an_id() -> None:
    da = make("a", "b")
    assert da[0] in da
    assert Document(id="a", text="text-a") in da  # equal, not identical
    assert Document(id="a") not in da  # same id, different text
    assert "a" in da
    assert "zz" not in da
    assert 3 not in da


# -- equality -----------------------------------------------------------------------------


def test_arrays_with_equal_documents_are_equal() -> None:
    assert make("a", "b") == make("a", "b")
    assert make("a", "b") != make("b", "a")
    assert make("a") != make("a", "b")


def test_array_is_not_equal_to_a_list() -> None:
    da = make("a")
    assert da != list(da)


# -- bulk attributes ----------------------------------------------------------------------


def test_ids_and_texts() -> None:
    da = make("a", "b")
    assert da.ids == ["a", "b"]
    assert da.texts == ["text-a", "text-b"]


def test_texts_setter_sets_each_document() -> None:
    da = make("a", "b")
    da.texts = ["x", "y"]
    assert [doc.text for doc in da] == ["x", "y"]


def test_texts_setter_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="2 Documents from 3 values"):
        make("a", "b").texts = ["x", "y", "z"]


def test_blobs_getter_and_setter() -> None:
    da = make("a", "b")
    da.blobs = [b"1", b"2"]
    assert da.blobs == [b"1", b"2"]
    with pytest.raises(ValueError):
        da.blobs = [b"1"]


def test_embeddings_are_none_when_no_document_has_one() -> None:
    assert make("a", "b").embeddings is None
    assert DocumentArray().embeddings is None


def test_embeddings_are_stacked() -> None:
    da = DocumentArray(Document(embedding=[i, i + 1.0]) for i in range(3))
    embeddings = da.embeddings
    assert embeddings is not None
    np.testing.assert_array_equal(embeddings, [[0, 1], [1, 2], [2, 3]])


def test_embeddings_getter_rejects_partially_missing_embeddings() -> None:
    da = DocumentArray([Document(embedding=[1.0]), Document(id="bare")])
    with pytest.raises(ValueError, match=r"1 of 2 Documents have no embedding.*'bare'"):
        _ = da.embeddings


def test_embeddings_getter_rejects_different_shapes() -> None:
    da = DocumentArray([Document(embedding=[1.0]), Document(id="long", embedding=[1.0, 2.0])])
    with pytest.raises(ValueError, match=r"different shapes.*'long'"):
        _ = da.embeddings


def test_embeddings_setter_gives_each_document_its_row() -> None:
    da = DocumentArray.empty(3)
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    da.embeddings = matrix
    for i, doc in enumerate(da):
        assert doc.embedding is not None
        np.testing.assert_array_equal(doc.embedding, matrix[i])
    np.testing.assert_array_equal(da.embeddings, matrix)


def test_embeddings_setter_accepts_nested_lists() -> None:
    da = DocumentArray.empty(2)
    da.embeddings = [[1, 2], [3, 4]]
    assert da[1].embedding is not None
    assert da[1].embedding.tolist() == [3, 4]


def test_embeddings_setter_with_a_1d_array_gives_0d_arrays() -> None:
    da = DocumentArray.empty(2)
    da.embeddings = np.array([1.0, 2.0])
    assert isinstance(da[0].embedding, np.ndarray)
    assert da[0].embedding.shape == ()


def test_embeddings_setter_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="3 Documents from 2 values"):
        DocumentArray.empty(3).embeddings = np.zeros((2, 4))


def test_embeddings_setter_rejects_a_scalar() -> None:
    with pytest.raises(ValueError, match="0-d"):
        DocumentArray.empty(3).embeddings = 1.0


def test_setting_embeddings_to_none_clears_them() -> None:
    da = DocumentArray.empty(2)
    da.embeddings = np.ones((2, 3))
    da.embeddings = None
    assert all(doc.embedding is None for doc in da)


def test_tensors_get_and_set_like_embeddings() -> None:
    da = DocumentArray.empty(2)
    assert da.tensors is None
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    da.tensors = images
    assert da[0].tensor is not None
    assert da[0].tensor.shape == (4, 4, 3)
    tensors = da.tensors
    assert tensors is not None
    assert tensors.shape == (2, 4, 4, 3)
    assert tensors.dtype == np.uint8
    with pytest.raises(ValueError):
        da.tensors = np.zeros((3, 1))


# -- match --------------------------------------------------------------------------------


def brute_force(
    queries: npt.NDArray[Any], index: npt.NDArray[Any], metric: str
) -> npt.NDArray[np.float64]:
    q = queries.astype(np.float64)
    x = index.astype(np.float64)
    scores = np.empty((len(q), len(x)))
    for i, a in enumerate(q):
        for j, b in enumerate(x):
            if metric == "cosine":
                scores[i, j] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            elif metric == "dot":
                scores[i, j] = a @ b
            else:
                scores[i, j] = np.sqrt(((a - b) ** 2).sum())
    return scores


def with_embeddings(matrix: npt.NDArray[Any], prefix: str) -> DocumentArray:
    da = DocumentArray(Document(id=f"{prefix}{i}", text=f"t{i}") for i in range(len(matrix)))
    da.embeddings = matrix
    return da


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_match_agrees_with_brute_force(metric: str, dtype: type[np.floating[Any]]) -> None:
    rng = np.random.default_rng(42)
    queries = with_embeddings(rng.standard_normal((7, 16)).astype(dtype), "q")
    index = with_embeddings(rng.standard_normal((50, 16)).astype(dtype), "x")
    queries.match(index, metric=metric, limit=5)  # type: ignore[arg-type]
    expected = brute_force(queries.embeddings, index.embeddings, metric)  # type: ignore[arg-type]
    tolerance = 1e-9 if dtype == np.float64 else 1e-4
    for row, doc in enumerate(queries):
        order = np.argsort(expected[row] if metric == "euclidean" else -expected[row])[:5]
        assert doc.matches.ids == [f"x{j}" for j in order]
        got = [m.scores[metric] for m in doc.matches]
        np.testing.assert_allclose(got, expected[row, order], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_match_sorts_best_first(metric: str) -> None:
    rng = np.random.default_rng(1)
    queries = with_embeddings(rng.standard_normal((3, 8)), "q")
    queries.match(with_embeddings(rng.standard_normal((30, 8)), "x"), metric=metric, limit=10)  # type: ignore[arg-type]
    for doc in queries:
        scores = [m.scores[metric] for m in doc.matches]
        assert scores == sorted(scores, reverse=not score_is_ascending(metric))


def test_match_limit_caps_the_number_of_matches() -> None:
    rng = np.random.default_rng(2)
    queries = with_embeddings(rng.standard_normal((2, 4)), "q")
    queries.match(with_embeddings(rng.standard_normal((10, 4)), "x"), limit=3)
    assert [len(doc.matches) for doc in queries] == [3, 3]
    queries.match(with_embeddings(rng.standard_normal((10, 4)), "x"), limit=100)
    assert [len(doc.matches) for doc in queries] == [10, 10]


def test_match_exclude_self_skips_documents_with_the_query_id() -> None:
    rng = np.random.default_rng(3)
    da = with_embeddings(rng.standard_normal((6, 4)), "d")
    da.match(da, metric="euclidean", limit=3)
    assert [doc.matches[0].id for doc in da] == da.ids
    assert da[0].matches[0].scores["euclidean"] == pytest.approx(0, abs=1e-6)

    da.match(da, metric="euclidean", limit=3, exclude_self=True)
    expected = brute_force(da.embeddings, da.embeddings, "euclidean")  # type: ignore[arg-type]
    np.fill_diagonal(expected, np.inf)
    for row, doc in enumerate(da):
        assert doc.id not in doc.matches
        assert len(doc.matches) == 3
        assert doc.matches.ids == [f"d{j}" for j in np.argsort(expected[row])[:3]]


def test_match_exclude_self_with_a_limit_above_the_index_size() -> None:
    da = with_embeddings(np.eye(3), "d")
    da.match(da, limit=10, exclude_self=True)
    assert [len(doc.matches) for doc in da] == [2, 2, 2]


def test_match_copies_index_documents_without_their_matches() -> None:
    index = with_embeddings(np.eye(2), "x")
    index[0].matches = [Document(id="old")]
    index[0].tags["k"] = "v"
    queries = with_embeddings(np.array([[1.0, 0.0]]), "q")
    queries.match(index, metric="dot", limit=1)
    match = queries[0].matches[0]
    assert match is not index[0]
    assert match.id == "x0"
    assert match.text == "t0"
    assert match.tags == {"k": "v"}
    assert match.embedding is index[0].embedding
    assert len(match.matches) == 0
    assert match.scores == {"dot": 1.0}
    assert index[0].scores == {}


def test_match_replaces_previous_matches() -> None:
    queries = with_embeddings(np.array([[1.0, 0.0]]), "q")
    queries[0].matches = [Document(id="stale")]
    queries.match(with_embeddings(np.eye(2), "x"), limit=5)
    assert "stale" not in queries[0].matches


def test_match_cosine_treats_zero_vectors_as_dissimilar() -> None:
    queries = with_embeddings(np.zeros((1, 3)), "q")
    queries.match(with_embeddings(np.eye(3), "x"), metric="cosine")
    assert [m.scores["cosine"] for m in queries[0].matches] == [0.0, 0.0, 0.0]


def test_match_accepts_integer_and_float16_embeddings() -> None:
    queries = with_embeddings(np.array([[1, 0]], dtype=np.int64), "q")
    index = with_embeddings(np.array([[3, 4], [1, 1]], dtype=np.float16), "x")
    queries.match(index, metric="euclidean")
    assert queries[0].matches.ids == ["x1", "x0"]
    assert queries[0].matches[1].scores["euclidean"] == pytest.approx(np.sqrt(20))


def test_match_against_an_empty_index_gives_no_matches() -> None:
    queries = with_embeddings(np.ones((2, 3)), "q")
    queries.match(DocumentArray())
    assert [len(doc.matches) for doc in queries] == [0, 0]


def test_match_rejects_an_unknown_metric() -> None:
    da = with_embeddings(np.ones((1, 2)), "q")
    with pytest.raises(ValueError, match="unknown metric 'manhattan'; use one of cosine"):
        da.match(da, metric="manhattan")  # type: ignore[arg-type]


def test_match_rejects_a_limit_below_one() -> None:
    da = with_embeddings(np.ones((1, 2)), "q")
    with pytest.raises(ValueError, match="limit"):
        da.match(da, limit=0)


def test_match_rejects_missing_query_embeddings() -> None:
    with pytest.raises(ValueError, match="no query Document has an embedding"):
        make("a").match(with_embeddings(np.ones((1, 2)), "x"))


def test_match_rejects_partially_missing_index_embeddings() -> None:
    index = with_embeddings(np.ones((2, 2)), "x")
    index.append(Document(id="bare"))
    with pytest.raises(ValueError, match="index 1 of 3 Documents have no embedding"):
        with_embeddings(np.ones((1, 2)), "q").match(index)


def test_match_rejects_different_dimensions() -> None:
    queries = with_embeddings(np.ones((1, 3)), "q")
    with pytest.raises(ValueError, match="dimension 3 but index embeddings have dimension 4"):
        queries.match(with_embeddings(np.ones((2, 4)), "x"))


def test_match_rejects_multidimensional_embeddings() -> None:
    queries = with_embeddings(np.ones((1, 2, 2)), "q")
    with pytest.raises(ValueError, match="1-d vectors"):
        queries.match(queries)


def test_score_is_ascending_only_for_distances() -> None:
    assert score_is_ascending("euclidean")
    assert not score_is_ascending("cosine")
    assert not score_is_ascending("dot")
    assert not score_is_ascending("anything-else")
    assert frozenset({"euclidean"}) == LOWER_IS_BETTER


# -- serialization ------------------------------------------------------------------------


def test_to_bytes_from_bytes_round_trip() -> None:
    da = DocumentArray(
        Document(id=f"d{i}", text=f"t{i}", embedding=np.full(4, i, dtype=np.float32))
        for i in range(3)
    )
    da[0].chunks = [Document(id="c", blob=b"\x00\x01")]
    data = da.to_bytes()
    assert isinstance(data, bytes)
    back = DocumentArray.from_bytes(data)
    assert back == da
    assert back[2].embedding is not None
    assert back[2].embedding.dtype == np.float32


def test_empty_array_round_trips_through_bytes() -> None:
    assert DocumentArray.from_bytes(DocumentArray().to_bytes()) == DocumentArray()
