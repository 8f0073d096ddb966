"""Polling ``ID``: each document goes to the shard that owns its id.

A stateful executor split into shards (an index) must see every write of a document on the
same shard, or ``/update`` and ``/delete`` miss what ``/index`` stored. With polling ``ID``
the gateway hashes each document id to a shard, sends each shard only its own documents and
puts the answers back together in the request's order. A request without documents
(``/count``, say) goes to every shard, as with ``ALL``.

The owner of an id is stable across gateways, processes and machines: the first 8 bytes of
``blake2b(id)`` (little-endian) are the key of Lamping and Veach's jump consistent hash
(https://arxiv.org/abs/1406.2294), which maps it to one of ``shards`` buckets. Growing from
``n`` to ``n + 1`` shards moves only ``1 / (n + 1)`` of the ids (to the new shard).

Documents stay serialized: the gateway reads their ids through the
:class:`~meshflow.proto.v1.data_request_pb2.DocumentIds` view and moves their bytes through
:class:`~meshflow.proto.v1.data_request_pb2.DataRequestParts`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from meshflow.document.columnar import to_rows
from meshflow.gateway.merge import merge_results
from meshflow.proto.v1 import data_request_pb2

_MASK = (1 << 64) - 1


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``range(buckets)`` of the 64-bit ``key`` (Lamping and Veach, 2014)."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    bucket, j = -1, 0
    while j < buckets:
        bucket = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


def shard_of(doc_id: str, shards: int) -> int:
    """The shard (of ``shards``) that owns the document id ``doc_id``.

    >>> [shard_of(i, 2) for i in ("p0", "p1", "p2", "p3")]
    [0, 0, 1, 1]
    """
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return jump_hash(int.from_bytes(digest, "little"), shards)


@dataclass(frozen=True)
class Part:
    """The share of a request that one shard owns."""

    shard: int
    positions: tuple[int, ...]
    """Where its documents are in the request."""
    data: bytes
    """The serialized request holding only those documents."""


def split(data: bytes, shards: int) -> list[Part] | None:
    """Split the serialized request ``data`` by the shard owning each document; None when it
    holds no documents (it then goes to every shard). Shards owning none are left out.

    Columnar documents are moved into the row layout first (the parts and the answers are
    then in the row layout)."""
    if data_request_pb2.DataRequestParts.FromString(data).columns:
        data = as_rows(data)
    ids = data_request_pb2.DocumentIds.FromString(data).docs
    if not ids:
        return None
    owners = [shard_of(d.id, shards) for d in ids]
    request = data_request_pb2.DataRequestParts.FromString(data)
    raw = list(request.docs)
    parts = []
    for shard in sorted(set(owners)):
        positions = tuple(i for i, owner in enumerate(owners) if owner == shard)
        del request.docs[:]
        request.docs.extend(raw[i] for i in positions)
        parts.append(Part(shard, positions, request.SerializeToString()))
    return parts


def as_rows(data: bytes) -> bytes:
    """The serialized request ``data`` with its documents in the row layout."""
    request = data_request_pb2.DataRequest.FromString(data)
    to_rows(request)
    return request.SerializeToString()


def reassemble(parts: Sequence[Part], answers: Sequence[bytes], deployment: str) -> bytes:
    """One answer from each part's answer: documents back in the request's order,
    ``deployment``'s results combined by their declared rules (see
    :func:`~meshflow.gateway.merge.merge_results`).

    An executor that answered a part with other documents than it got (fewer, more) keeps
    them: the parts' documents then follow one another in shard order.
    """
    decoded = [data_request_pb2.DataRequestParts.FromString(a) for a in answers]
    merged = data_request_pb2.DataRequestParts()
    merged.CopyFrom(decoded[0])
    del merged.docs[:]
    if all(len(a.docs) == len(p.positions) for p, a in zip(parts, decoded, strict=True)):
        slots: list[bytes] = [b""] * sum(len(p.positions) for p in parts)
        for part, answer in zip(parts, decoded, strict=True):
            for position, doc in zip(part.positions, answer.docs, strict=True):
                slots[position] = doc
        merged.docs.extend(slots)
    else:
        for answer in decoded:
            merged.docs.extend(answer.docs)
    merge_results(merged, decoded, deployment=deployment)
    return merged.SerializeToString()
