"""Polling ID: stable owners of document ids, split and reassembly on the wire, reduce rules."""

from __future__ import annotations

import collections

import pytest

from meshflow import ConfigError, Document, DocumentArray, Executor, requests
from meshflow.document.proto import (
    dict_to_struct,
    documents_from_proto,
    documents_to_proto,
    struct_to_dict,
)
from meshflow.gateway.merge import merge_requests, reduce_dicts
from meshflow.gateway.sharding import Part, jump_hash, reassemble, shard_of, split
from meshflow.gateway.topology import normalise_polling
from meshflow.proto.v1 import data_request_pb2


def request(docs: list[Document], **fields: object) -> bytes:
    req = data_request_pb2.DataRequest(**fields)  # type: ignore[arg-type]
    documents_to_proto(docs, req.docs)
    return req.SerializeToString()


def test_owners_are_pinned_so_every_gateway_and_release_agrees() -> None:
    # blake2b(id, 8 bytes, little-endian) -> jump hash: fixed values, never to change
    assert [shard_of(f"p{i}", 2) for i in range(8)] == [0, 0, 1, 1, 1, 0, 1, 0]
    assert [shard_of(f"p{i}", 5) for i in range(8)] == [0, 0, 3, 3, 1, 0, 1, 4]
    assert shard_of("", 3) in range(3)


def test_jump_hash_gives_the_published_test_vectors() -> None:
    # the vectors of the reference implementations (Lamping and Veach's algorithm)
    assert jump_hash(1, 1) == 0
    assert jump_hash(42, 57) == 43
    assert jump_hash(0xDEAD10CC, 1) == 0
    assert jump_hash(0xDEAD10CC, 666) == 361
    assert jump_hash(256, 1024) == 520


def test_ids_spread_evenly_and_growing_moves_only_what_the_new_shard_takes() -> None:
    ids = [f"doc-{i}" for i in range(20_000)]
    counts = collections.Counter(shard_of(i, 4) for i in ids)
    assert all(4_600 < n < 5_400 for n in counts.values())
    before = {i: shard_of(i, 4) for i in ids}
    after = {i: shard_of(i, 5) for i in ids}
    moved = [i for i in ids if before[i] != after[i]]
    assert all(after[i] == 4 for i in moved)  # nothing moves between the old shards
    assert 3_500 < len(moved) < 4_500  # about a fifth


def test_bad_bucket_count_is_refused() -> None:
    with pytest.raises(ValueError, match="buckets"):
        jump_hash(1, 0)


def test_split_sends_each_shard_only_its_documents_and_keeps_the_rest() -> None:
    docs = [Document(id=f"p{i}", text=f"t{i}") for i in range(8)]
    data = request(
        docs,
        header=data_request_pb2.Header(endpoint="/index", request_id="r1"),
        parameters=dict_to_struct({"limit": 3}),
    )
    parts = split(data, 2)
    assert parts is not None
    assert [p.shard for p in parts] == [0, 1]
    assert parts[0].positions == (0, 1, 5, 7) and parts[1].positions == (2, 3, 4, 6)
    for part in parts:
        sent = data_request_pb2.DataRequest.FromString(part.data)
        assert [d.id for d in sent.docs] == [f"p{i}" for i in part.positions]
        assert [d.text for d in sent.docs] == [f"t{i}" for i in part.positions]
        assert sent.header.endpoint == "/index" and sent.header.request_id == "r1"
        assert struct_to_dict(sent.parameters) == {"limit": 3}


def test_a_request_without_documents_is_not_split() -> None:
    assert split(request([], header=data_request_pb2.Header(endpoint="/count")), 2) is None


def test_shards_owning_nothing_are_not_called() -> None:
    parts = split(request([Document(id="p2"), Document(id="p3")]), 2)
    assert parts is not None and [p.shard for p in parts] == [1]


def test_reassembly_restores_request_order_and_sums_declared_results() -> None:
    docs = [Document(id=f"p{i}") for i in range(8)]
    parts = split(request(docs), 2)
    assert parts is not None
    answers = []
    for part in parts:
        got = documents_from_proto(data_request_pb2.DataRequest.FromString(part.data).docs)
        for d in got:
            d.text = f"shard {part.shard}"
        answers.append(
            request(
                list(got),
                results={"index": dict_to_struct({"indexed": len(got), "shard": part.shard})},
                reduce={"index": data_request_pb2.ReduceRules(rules={"indexed": "sum"})},
            )
        )
    answer = data_request_pb2.DataRequest.FromString(reassemble(parts, answers, "index"))
    back = documents_from_proto(answer.docs)
    assert back.ids == [f"p{i}" for i in range(8)]
    assert [d.text for d in back] == [f"shard {shard_of(d.id, 2)}" for d in back]
    assert struct_to_dict(answer.results["index"]) == {"indexed": 8, "shard": 1}


def test_answers_with_other_documents_follow_one_another() -> None:
    parts = split(request([Document(id=f"p{i}") for i in range(4)]), 2)
    assert parts is not None
    answers = [request([Document(id=f"new{p.shard}")]) for p in parts]
    back = data_request_pb2.DataRequest.FromString(reassemble(parts, answers, "indexer"))
    assert [d.id for d in back.docs] == ["new0", "new1"]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("sum", 12),
        ("min", 3),
        ("max", 5),
        ("first", 4),
        ("last", 3),
    ],
)
def test_number_rules(rule: str, expected: int) -> None:
    dicts = [{"n": 4}, {"n": 5}, {"n": 3}]
    assert reduce_dicts(dicts, {"n": rule}) == {"n": expected}


def test_concat_merge_and_the_default_rule() -> None:
    dicts = [
        {"ids": ["a"], "by": {"x": 1}, "who": "s0"},
        {"ids": ["b", "c"], "by": {"y": 2}, "who": "s1"},
        {"only": True},
    ]
    rules = {"ids": "concat", "by": "merge"}
    assert reduce_dicts(dicts, rules) == {
        "ids": ["a", "b", "c"],
        "by": {"x": 1, "y": 2},
        "who": "s1",  # no rule: the last shard's value, as before rules existed
        "only": True,
    }


def test_a_rule_that_does_not_fit_keeps_the_last_value() -> None:
    assert reduce_dicts([{"n": "a"}, {"n": "b"}], {"n": "sum"}) == {"n": "b"}


def test_all_polling_counts_add_up_with_a_sum_rule() -> None:
    rules = {"indexer": data_request_pb2.ReduceRules(rules={"count": "sum"})}
    shards = [
        data_request_pb2.DataRequest(
            results={"indexer": dict_to_struct({"count": n})}, reduce=rules
        )
        for n in (10_029, 9_971)
    ]
    merged = merge_requests(shards, deployment="indexer")
    assert struct_to_dict(merged.results["indexer"]) == {"count": 20_000}
    assert dict(merged.reduce["indexer"].rules) == {"count": "sum"}
    undeclared = [data_request_pb2.DataRequest(results=s.results) for s in shards]
    last = merge_requests(undeclared, deployment="indexer")
    assert struct_to_dict(last.results["indexer"]) == {"count": 9_971}


def test_results_of_executors_before_the_shards_are_not_reduced_again() -> None:
    """A sharded deployment after another: each shard's answer carries the earlier executor's
    results (and its rules) as the same copy; they are taken once, not summed per shard."""
    rules = {
        "encoder": data_request_pb2.ReduceRules(rules={"indexed": "sum"}),
        "store": data_request_pb2.ReduceRules(rules={"indexed": "sum"}),
    }
    shards = [
        data_request_pb2.DataRequest(
            results={
                "encoder": dict_to_struct({"indexed": 10}),
                "store": dict_to_struct({"indexed": n}),
            },
            reduce=rules,
        )
        for n in (4, 6)
    ]
    for merged in (
        merge_requests(shards, deployment="store"),
        data_request_pb2.DataRequest.FromString(
            reassemble(
                [Part(0, (), b""), Part(1, (), b"")],
                [s.SerializeToString() for s in shards],
                "store",
            )
        ),
    ):
        assert struct_to_dict(merged.results["encoder"]) == {"indexed": 10}
        assert struct_to_dict(merged.results["store"]) == {"indexed": 10}
        assert dict(merged.reduce["encoder"].rules) == {"indexed": "sum"}
    # branches meeting at a join: the dict both carry from before the fork is one copy
    assert struct_to_dict(merge_requests(shards).results["encoder"]) == {"indexed": 10}


def test_endpoint_declares_reduce_rules() -> None:
    class Store(Executor):
        @requests(on=["/count", "/size"], read_only=True, reduce={"count": "sum"})
        def count(self, **kwargs: object) -> dict[str, int]:
            return {"count": 1}

        @requests(on="/index")
        def index(self, docs: DocumentArray, **kwargs: object) -> None:
            pass

    assert dict(Store.endpoints["/count"].reduce) == {"count": "sum"}
    assert dict(Store.endpoints["/size"].reduce) == {"count": "sum"}
    assert dict(Store.endpoints["/index"].reduce) == {}


def test_unknown_reduce_rule_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="'avg' is not a rule"):
        requests(on="/count", reduce={"count": "avg"})


def test_polling_id_is_parsed_and_unknown_pollings_are_named() -> None:
    assert normalise_polling({"/index": "id", "*": "ALL"}, deployment="d") == {
        "/index": "ID",
        "*": "ALL",
    }
    with pytest.raises(ConfigError, match="'ANY', 'ALL' or 'ID'"):
        normalise_polling({"/index": "HASH"}, deployment="d")
