"""Ranker: fusing per-modality matches."""

from __future__ import annotations

from typing import Any

import pytest

from meshflow import Document, DocumentArray, RuntimeArgs
from services.ranker import Ranker, RankParams


def make(workspace: str, **kwargs: Any) -> Ranker:
    ranker = Ranker.__new__(Ranker)
    ranker._runtime_args = RuntimeArgs(name="ranker", workspace_root=workspace)
    ranker.__init__(**kwargs)  # type: ignore[misc]
    return ranker


def query(**lists: list[tuple[str, float]]) -> DocumentArray:
    chunks = [
        Document(
            id=f"q/{name}",
            tags={"modality": name},
            matches=[Document(id=i, text=i, scores={"cosine": s}) for i, s in found],
        )
        for name, found in lists.items()
    ]
    return DocumentArray([Document(id="q", chunks=chunks)])


def test_weighted_fusion_prefers_items_both_modalities_found(tmp_path: Any) -> None:
    docs = query(
        image=[("a", 0.9), ("b", 0.88), ("c", 0.5)], text=[("b", 0.8), ("d", 0.75), ("e", 0.6)]
    )
    make(str(tmp_path)).rank(docs, RankParams(limit=3))
    matches = docs[0].matches
    assert matches.ids == ["b", "a", "d"]
    b = matches["b"].scores
    assert b["fused"] == pytest.approx((0.88 + 0.8) / 2)
    assert (b["image"], b["text"]) == (pytest.approx(0.88), pytest.approx(0.8))
    # a: text did not find it, so it gets text's lowest score (0.6) as a bound
    assert matches["a"].scores["fused"] == pytest.approx((0.9 + 0.6) / 2)
    assert "text" not in matches["a"].scores
    assert all(not c.matches for c in docs[0].chunks)  # each match once in the answer


def test_weights_and_rrf(tmp_path: Any) -> None:
    lists = {"image": [("a", 0.9), ("b", 0.8)], "text": [("b", 0.9), ("a", 0.1)]}
    docs = query(**lists)
    make(str(tmp_path), weights={"image": 0.0, "text": 1.0}).rank(docs, RankParams())
    assert docs[0].matches.ids == ["b", "a"]
    docs = query(**lists)
    make(str(tmp_path), weights={"image": 10.0}).rank(docs, RankParams())
    assert docs[0].matches.ids == ["a", "b"]
    docs = query(image=[("a", 0.9), ("b", 0.8)], text=[("b", 0.9), ("c", 0.8)])
    make(str(tmp_path), method="rrf").rank(docs, RankParams())
    assert docs[0].matches.ids[0] == "b"  # found by both: 1/62 + 1/61
    assert docs[0].matches["b"].scores["fused"] == pytest.approx(1 / 62 + 1 / 61)


def test_single_modality_keeps_its_order_and_limit(tmp_path: Any) -> None:
    docs = query(text=[("x", 0.9), ("y", 0.5), ("z", 0.4)])
    make(str(tmp_path), keep_chunk_matches=True).rank(docs, RankParams(limit=2))
    assert docs[0].matches.ids == ["x", "y"]
    assert docs[0].matches["x"].scores["fused"] == pytest.approx(0.9)
    assert len(docs[0].chunks[0].matches) == 3  # kept when asked


def test_bad_settings_are_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="method"):
        make(str(tmp_path), method="vote")
    with pytest.raises(ValueError, match="weights"):
        make(str(tmp_path), weights={"image": -1.0})
