"""Merging branch and shard answers on the wire messages."""

from __future__ import annotations

from typing import Any

import numpy as np

from meshflow import Document, DocumentArray
from meshflow.document.proto import documents_from_proto, documents_to_proto
from meshflow.gateway.merge import merge_requests, ranking_score, reduce_shards
from meshflow.proto.v1 import data_request_pb2


def request(docs: list[Document]) -> data_request_pb2.DataRequest:
    req = data_request_pb2.DataRequest()
    documents_to_proto(docs, req.docs)
    return req


def test_join_keeps_first_branch_order_and_later_non_empty_fields_win() -> None:
    left = request([Document(id="a", text="L", tags={"l": 1}), Document(id="b", text="L")])
    right = request(
        [
            Document(id="b", text="", embedding=np.ones(2), tags={"r": 1}),
            Document(id="a", text="R", tags={"r": 2}),
            Document(id="c", text="only right"),
        ]
    )
    merged = documents_from_proto(merge_requests([left, right]).docs)
    assert merged.ids == ["a", "b", "c"]
    assert merged["a"].text == "R" and merged["a"].tags == {"l": 1.0, "r": 2.0}
    assert merged["b"].text == "L" and merged["b"].embedding.tolist() == [1.0, 1.0]


def test_join_unions_matches_by_id() -> None:
    left = request([Document(id="q", matches=DocumentArray([Document(id="m1", text="x")]))])
    right = request(
        [Document(id="q", matches=DocumentArray([Document(id="m1", uri="u"), Document(id="m2")]))]
    )
    [doc] = documents_from_proto(merge_requests([left, right]).docs)
    assert doc.matches.ids == ["m1", "m2"]
    assert (doc.matches["m1"].text, doc.matches["m1"].uri) == ("x", "u")


def test_shard_reduce_sorts_by_score_and_keeps_each_shards_top_k() -> None:
    def shard(values: list[float], prefix: str) -> data_request_pb2.DataRequest:
        matches = DocumentArray(
            Document(id=f"{prefix}{i}", scores={"cosine": v}) for i, v in enumerate(values)
        )
        return request([Document(id="q", matches=matches)])

    reduced = reduce_shards([shard([0.9, 0.5, 0.1], "a"), shard([0.95, 0.6, 0.2], "b")])
    [doc] = documents_from_proto(reduced.docs)
    assert doc.matches.ids == ["b0", "a0", "b1"]


def test_shard_reduce_sorts_distances_ascending_and_honours_limit() -> None:
    def shard(values: list[float], prefix: str) -> data_request_pb2.DataRequest:
        matches = DocumentArray(
            Document(id=f"{prefix}{i}", scores={"euclidean": v}) for i, v in enumerate(values)
        )
        return request([Document(id="q", matches=matches)])

    reduced = reduce_shards([shard([0.1, 3.0], "a"), shard([0.2, 0.3], "b")], {"limit": 3})
    [doc] = documents_from_proto(reduced.docs)
    assert doc.matches.ids == ["a0", "b0", "b1"]


def test_results_of_branches_are_unioned() -> None:
    left, right = request([]), request([])
    left.results["a"].update({"n": 1})
    right.results["b"].update({"n": 2})
    merged = merge_requests([left, right])
    assert set(merged.results) == {"a", "b"}


def test_shard_reduce_sorts_and_cuts_the_matches_of_chunks_too() -> None:
    """A multimodal query's matches are on its chunks (one per modality)."""

    def shard(image: list[float], text: list[float], prefix: str) -> data_request_pb2.DataRequest:
        chunks = [
            Document(
                id=f"q/{name}",
                tags={"modality": name},
                matches=[
                    Document(id=f"{prefix}{i}", scores={"cosine": v}) for i, v in enumerate(values)
                ],
            )
            for name, values in (("image", image), ("text", text))
        ]
        return request([Document(id="q", chunks=chunks)])

    reduced = reduce_shards(
        [shard([0.9, 0.2], [0.3, 0.1], "a"), shard([0.5, 0.4], [0.8, 0.7], "b")], {"limit": 3}
    )
    [doc] = documents_from_proto(reduced.docs)
    image, text = doc.chunks
    assert image.matches.ids == ["a0", "b0", "b1"]
    assert text.matches.ids == ["b0", "b1", "a0"]


def test_shard_reduce_ranks_by_the_declared_score_name() -> None:
    def shard(id_: str, cosine: float, fused: float) -> data_request_pb2.DataRequest:
        match = Document(id=id_, scores={"cosine": cosine, "fused": fused})
        return request([Document(id="q", matches=DocumentArray([match]))])

    shards = [shard("a", 0.9, 0.1), shard("b", 0.2, 0.8)]
    [doc] = documents_from_proto(reduce_shards(shards, {"score_name": "fused", "limit": 2}).docs)
    assert doc.matches.ids == ["b", "a"]
    [doc] = documents_from_proto(reduce_shards(shards, {"score_name": "cosine", "limit": 2}).docs)
    assert doc.matches.ids == ["a", "b"]


def test_shard_reduce_ranks_by_the_same_score_whatever_the_map_order() -> None:
    def shard(id_: str, cosine: float, fused: float, order: tuple[str, str]) -> Any:
        values = {"cosine": cosine, "fused": fused}
        match = Document(id=id_, scores={name: values[name] for name in order})
        return request([Document(id="q", matches=DocumentArray([match]))])

    for order in (("cosine", "fused"), ("fused", "cosine")):
        shards = [shard("a", 0.9, 0.1, order), shard("b", 0.2, 0.8, order)]
        [doc] = documents_from_proto(reduce_shards(shards, {"limit": 2}).docs)
        # Both names on every match: alphabetical order picks 'cosine'.
        assert doc.matches.ids == ["a", "b"], order


def test_the_score_most_matches_carry_ranks_them() -> None:
    matches = [
        Document(id="a", scores={"zeta": 1.0, "extra": 5.0}),
        Document(id="b", scores={"zeta": 2.0}),
    ]
    docs = DocumentArray(matches)
    raw = request([Document(id="q", matches=docs)])
    assert ranking_score(raw.docs[0].matches) == "zeta"
    assert ranking_score(raw.docs[0].matches, "extra") == "extra"
    assert ranking_score(request([Document(id="q")]).docs[0].matches) is None
