"""Ranker: one ranking per query from the matches each of its modalities found.

A multimodal query has one chunk per modality (``tags['modality']``), each with its own
matches (see :class:`~services.vector_indexer.VectorIndexer` ``spaces``). The Ranker joins
them by match id into the query's ``matches``, each scored ``scores['fused']`` plus the
modality scores it was found with (``scores['image']``, ``scores['text']``):

- ``weighted`` (default): the weighted mean of the modalities' cosine scores. A match that a
  modality did not return gets that modality's lowest returned score (its score is at most
  that), so an item found by both outranks one found by a single modality.
- ``rrf``: reciprocal rank fusion, ``sum(w / (k + rank))``; needs no comparable scores.

A query with a single modality keeps that modality's ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshflow import Document, DocumentArray, Executor, requests

SOURCE_SCORE = "cosine"


@dataclass
class RankParams:
    """Parameters of ``/search`` the Ranker reads."""

    limit: int = 10
    """Matches per query after fusion."""


class Ranker(Executor):
    """Fuses each query's per-modality matches into its ``matches``.

    Args:
        weights: weight per modality; modalities not listed weigh 1.
        method: ``"weighted"`` or ``"rrf"``.
        rrf_k: the constant of reciprocal rank fusion.
        space_tag: the chunk tag naming a chunk's modality.
        keep_chunk_matches: keep the per-modality matches on the chunks as well (off: the
            answer carries each match once).
    """

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        method: str = "weighted",
        rrf_k: int = 60,
        space_tag: str = "modality",
        keep_chunk_matches: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if method not in ("weighted", "rrf"):
            raise ValueError(f"method must be 'weighted' or 'rrf', got {method!r}")
        if weights and any(w < 0 for w in weights.values()):
            raise ValueError("weights must be >= 0")
        if rrf_k < 1:
            raise ValueError("rrf_k must be >= 1")
        self.weights = dict(weights or {})
        self.method = method
        self.rrf_k = rrf_k
        self.space_tag = space_tag
        self.keep_chunk_matches = keep_chunk_matches

    @requests(on="/search", read_only=True)
    def rank(self, docs: DocumentArray, parameters: RankParams, **kwargs: Any) -> None:
        """Set each query's ``matches`` to its fused top ``limit``."""
        for doc in docs:
            lists: dict[str, DocumentArray] = {}
            for chunk in doc.chunks:
                modality = chunk.tags.get(self.space_tag)
                if isinstance(modality, str) and chunk.matches:
                    lists[modality] = chunk.matches
                    if not self.keep_chunk_matches:
                        chunk.matches = None
            if doc.matches and "" not in lists:
                lists[""] = doc.matches
            if lists:
                doc.matches = self.fuse(lists)[: max(parameters.limit, 0)]

    def fuse(self, lists: dict[str, DocumentArray]) -> DocumentArray:
        """One ranking from several (modality -> matches, best first)."""
        found: dict[str, Document] = {}
        scores: dict[str, dict[str, float]] = {}
        ranks: dict[str, dict[str, int]] = {}
        floor: dict[str, float] = {}
        for modality, matches in lists.items():
            values = []
            for rank, match in enumerate(matches):
                first = next(iter(match.scores.values()), 0.0)
                value = float(match.scores.get(SOURCE_SCORE, first))
                values.append(value)
                found.setdefault(match.id, match)
                scores.setdefault(match.id, {})[modality] = value
                ranks.setdefault(match.id, {})[modality] = rank
            floor[modality] = min(values) if values else 0.0
        total = sum(self.weights.get(m, 1.0) for m in lists) or 1.0
        fused: dict[str, float] = {}
        for match_id in found:
            if self.method == "rrf":
                fused[match_id] = sum(
                    self.weights.get(m, 1.0) / (self.rrf_k + 1 + r)
                    for m, r in ranks[match_id].items()
                )
            else:
                fused[match_id] = (
                    sum(self.weights.get(m, 1.0) * scores[match_id].get(m, floor[m]) for m in lists)
                    / total
                )
        ordered = sorted(found, key=lambda i: -fused[i])
        out = DocumentArray()
        for match_id in ordered:
            match = found[match_id].copy()
            match.scores.clear()
            match.scores["fused"] = fused[match_id]
            for modality, value in scores[match_id].items():
                match.scores[modality or SOURCE_SCORE] = value
            out.append(match)
        return out
