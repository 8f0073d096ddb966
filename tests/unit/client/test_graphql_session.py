"""The GraphQL client splits a long stream into subscriptions the gateway accepts."""

from __future__ import annotations

from meshflow import Document
from meshflow.client.graphql import subscriptions


def batches(*sizes: int) -> list[list[Document]]:
    return [[Document() for _ in range(n)] for n in sizes]


def test_a_stream_within_the_limits_is_one_subscription() -> None:
    stream = batches(10, 10, 10)
    assert [(start, len(group)) for start, group in subscriptions(stream)] == [(0, 3)]


def test_documents_past_the_limit_start_another_subscription() -> None:
    stream = batches(400, 400, 400, 100, 500)
    groups = list(subscriptions(stream, max_docs=1000))
    assert [(start, len(group)) for start, group in groups] == [(0, 2), (2, 3)]
    assert all(sum(map(len, group)) <= 1000 for _, group in groups)


def test_batches_past_the_limit_start_another_subscription() -> None:
    stream = batches(*[1] * 250)
    groups = list(subscriptions(stream, max_batches=100))
    assert [(start, len(group)) for start, group in groups] == [(0, 100), (100, 100), (200, 50)]


def test_a_batch_larger_than_the_limit_goes_alone_for_the_gateway_to_refuse() -> None:
    stream = batches(5, 2000, 5)
    assert [(start, len(group)) for start, group in subscriptions(stream)] == [
        (0, 1),
        (1, 1),
        (2, 1),
    ]
