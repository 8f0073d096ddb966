"""Merging the answers of parallel branches and of shards, on the wire messages.

Branches that meet at a join are merged by document id: documents keep the order of the first
branch (documents only a later branch returns are appended), matches and chunks are unioned by
id, and for every other field a later non-empty value wins (tags and scores key by key).
Shards polled with ``ALL`` are merged the same way, then each document's matches (and each
of its chunks' matches) are sorted by their score and cut to the top-k.

Which score ranks the matches (a match may carry several, and a protobuf map has no order):
the request parameter ``score_name`` when it is a string; otherwise the score name the most
matches of that document carry, ties broken by alphabetical order. Distances
(``euclidean``) sort ascending, other scores descending; matches without the score go last.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from meshflow.document.array import score_is_ascending
from meshflow.proto.v1 import data_request_pb2, document_pb2

_SCALARS = ("parent_id", "text", "blob", "uri", "mime_type")


def merge_document(base: document_pb2.Document, other: document_pb2.Document) -> None:
    """Merge ``other`` into ``base`` (same id): later non-empty fields win."""
    for name in _SCALARS:
        value = getattr(other, name)
        if value:
            setattr(base, name, value)
    if other.HasField("tensor"):
        base.tensor.CopyFrom(other.tensor)
    if other.HasField("embedding"):
        base.embedding.CopyFrom(other.embedding)
    if other.HasField("tags"):
        base.tags.MergeFrom(other.tags)
    if other.scores:
        base.scores.MergeFrom(other.scores)
    _union(base.matches, other.matches)
    _union(base.chunks, other.chunks)


def _union(base: Any, other: Any) -> None:
    if not other:
        return
    index = {d.id: d for d in base}
    for doc in other:
        mine = index.get(doc.id)
        if mine is None:
            base.add().CopyFrom(doc)
        else:
            merge_document(mine, doc)


def merge_requests(outputs: Sequence[data_request_pb2.DataRequest]) -> data_request_pb2.DataRequest:
    """Merge the answers of several branches (or shards) to one request by document id."""
    merged = data_request_pb2.DataRequest()
    merged.CopyFrom(outputs[0])
    index = {d.id: d for d in merged.docs}
    for out in outputs[1:]:
        for doc in out.docs:
            mine = index.get(doc.id)
            if mine is None:
                added = merged.docs.add()
                added.CopyFrom(doc)
                index[added.id] = added
            else:
                merge_document(mine, doc)
        for name, result in out.results.items():
            # Several shards of one executor: their dicts merge key by key.
            merged.results[name].MergeFrom(result)
    return merged


def reduce_shards(
    outputs: Sequence[data_request_pb2.DataRequest], parameters: Mapping[str, Any] | None = None
) -> data_request_pb2.DataRequest:
    """Merge the answers of all shards and keep each document's top-k matches by score.

    k is the request parameter ``limit`` (or ``top_k``) when set; otherwise the largest number
    of matches a single shard returned for that document, i.e. each shard's own top-k.
    """
    per_shard_counts: dict[tuple[str, ...], int] = {}
    for out in outputs:
        for doc in out.docs:
            for key, holder in _match_holders(doc):
                per_shard_counts[key] = max(per_shard_counts.get(key, 0), len(holder.matches))
    merged = merge_requests(outputs)
    limit = _limit(parameters)
    declared = (parameters or {}).get("score_name")
    declared = declared if isinstance(declared, str) else None
    for doc in merged.docs:
        for key, holder in _match_holders(doc):
            if len(holder.matches) > 1:
                count = limit or per_shard_counts.get(key, len(holder.matches))
                _sort_matches(holder, count, declared)
    return merged


def _match_holders(
    doc: document_pb2.Document,
) -> list[tuple[tuple[str, ...], document_pb2.Document]]:
    """The document and its chunks (a multimodal query's matches are on its chunks)."""
    return [((doc.id,), doc)] + [((doc.id, c.id), c) for c in doc.chunks]


def _limit(parameters: Mapping[str, Any] | None) -> int | None:
    if not parameters:
        return None
    for key in ("limit", "top_k"):
        value = parameters.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def ranking_score(
    matches: Iterable[document_pb2.Document], declared: str | None = None
) -> str | None:
    """The score name that ranks ``matches``: ``declared`` when given, else the name the
    most matches carry (ties: alphabetical order); None when no match has a score."""
    if declared:
        return declared
    counts: collections.Counter[str] = collections.Counter()
    for match in matches:
        counts.update(match.scores.keys())
    if not counts:
        return None
    return min(counts, key=lambda name: (-counts[name], name))


def _sort_matches(doc: document_pb2.Document, limit: int, declared: str | None = None) -> None:
    score = ranking_score(doc.matches, declared)
    if score is None:
        del doc.matches[limit:]
        return
    sign = 1.0 if score_is_ascending(score) else -1.0

    def key(i: int) -> tuple[bool, float, int]:
        scores = doc.matches[i].scores
        # Matches without this score go last; ties keep their order.
        return (score not in scores, sign * scores.get(score, 0.0), i)

    ranked = sorted(range(len(doc.matches)), key=key)
    keep = [doc.matches[i].SerializeToString() for i in ranked[:limit]]
    del doc.matches[:]
    for raw in keep:
        doc.matches.add().ParseFromString(raw)
