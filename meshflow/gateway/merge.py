"""Merging the answers of parallel branches and of shards, on the wire messages.

Branches that meet at a join are merged by document id: documents keep the order of the first
branch (documents only a later branch returns are appended), matches and chunks are unioned by
id, and for every other field a later non-empty value wins (tags and scores key by key).
Shards polled with ``ALL`` are merged the same way, then each document's matches (and each
of its chunks' matches) are sorted by their score and cut to the top-k.

The ``results`` dicts of one executor's shards combine key by key: by the rule the endpoint
declares (``@requests(on='/count', reduce={'count': 'sum'})``, carried in the answer's
``reduce`` field), or else the last shard's value wins.

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
from meshflow.document.proto import dict_to_struct, struct_to_dict
from meshflow.proto.v1 import data_request_pb2, document_pb2

Answer = data_request_pb2.DataRequest | data_request_pb2.DataRequestParts
"""A decoded answer: whole, or with its documents left serialized."""

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


def merge_requests(
    outputs: Sequence[data_request_pb2.DataRequest], *, deployment: str | None = None
) -> data_request_pb2.DataRequest:
    """Merge the answers of several branches, or of ``deployment``'s shards, to one request
    by document id (results: see :func:`merge_results`)."""
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
    merge_results(merged, outputs, deployment=deployment)
    return merged


def merge_results(
    target: Answer, outputs: Sequence[Answer], *, deployment: str | None = None
) -> None:
    """Set ``target``'s results to those of ``outputs`` combined, each executor's dict key by
    key: by the rule its answer declares for the key, or else the last value wins.

    Only ``deployment``'s dicts (the answers are its shards') are reduced by their rules: what
    executors before it returned travels in every shard's answer as the same copy, taken once
    (a ``sum`` would count it once per shard). Without ``deployment`` (branches meeting at a
    join) nothing is reduced: each dict comes from one branch, or is one copy in several."""
    names: dict[str, None] = {}
    for out in outputs:
        names.update(dict.fromkeys(out.results))
    for name in names:
        rules: dict[str, str] = {}
        for out in outputs:
            if name in out.reduce:
                rules.update(out.reduce[name].rules)
        present = [out.results[name] for out in outputs if name in out.results]
        target.results[name].Clear()
        if not rules or name != deployment:
            for result in present:  # today's rule: key by key, the last value wins
                target.results[name].MergeFrom(result)
            if rules:
                target.reduce[name].rules.update(rules)
            continue
        target.results[name].CopyFrom(
            dict_to_struct(reduce_dicts([struct_to_dict(r) for r in present], rules))
        )
        target.reduce[name].rules.update(rules)


def reduce_dicts(dicts: Sequence[Mapping[str, Any]], rules: Mapping[str, str]) -> dict[str, Any]:
    """Combine several shards' results dicts key by key (a key without a rule: last wins).

    >>> reduce_dicts([{"count": 3, "shard": 0}, {"count": 4, "shard": 1}], {"count": "sum"})
    {'count': 7, 'shard': 1}
    """
    values: dict[str, list[Any]] = {}
    for one in dicts:
        for key, value in one.items():
            values.setdefault(key, []).append(value)
    return {key: reduce_values(rules.get(key, "last"), found) for key, found in values.items()}


def reduce_values(rule: str, values: Sequence[Any]) -> Any:
    """One value from several shards' ``values`` (in shard order) by ``rule``: ``sum``,
    ``min``, ``max`` (of the numbers), ``first``, ``last``, ``concat`` (lists, one after the
    other) or ``merge`` (dicts, later keys win). A rule that does not fit the values (``sum``
    of strings, or an unknown rule) keeps the last value."""
    if rule in ("sum", "min", "max"):
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if not numbers:
            return values[-1]
        if rule == "sum":
            return sum(numbers)
        return min(numbers) if rule == "min" else max(numbers)
    if rule == "first":
        return values[0]
    if rule == "concat":
        joined: list[Any] = []
        for value in values:
            if isinstance(value, list):
                joined.extend(value)
            else:
                joined.append(value)
        return joined
    if rule == "merge":
        merged: dict[str, Any] = {}
        for value in values:
            if isinstance(value, Mapping):
                merged.update(value)
        return merged
    return values[-1]


def reduce_shards(
    outputs: Sequence[data_request_pb2.DataRequest],
    parameters: Mapping[str, Any] | None = None,
    *,
    deployment: str | None = None,
) -> data_request_pb2.DataRequest:
    """Merge the answers of all of ``deployment``'s shards and keep each document's top-k
    matches by score.

    k is the request parameter ``limit`` (or ``top_k``) when set; otherwise the largest number
    of matches a single shard returned for that document, i.e. each shard's own top-k.
    """
    per_shard_counts: dict[tuple[str, ...], int] = {}
    for out in outputs:
        for doc in out.docs:
            for key, holder in _match_holders(doc):
                per_shard_counts[key] = max(per_shard_counts.get(key, 0), len(holder.matches))
    merged = merge_requests(outputs, deployment=deployment)
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
