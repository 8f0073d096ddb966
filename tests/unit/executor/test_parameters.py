"""Which request parameters each executor sees."""

from __future__ import annotations

from meshflow.executor.parameters import for_executor


def test_shared_parameters_reach_every_executor() -> None:
    assert for_executor({"limit": 10}, "ranker") == {"limit": 10}


def test_a_key_named_after_an_executor_overrides_for_it_alone() -> None:
    values = {"limit": 10, "ranker": {"limit": 3}}
    assert for_executor(values, "ranker") == {"limit": 3}
    assert for_executor(values, "indexer") == values


def test_jina_double_underscore_keys_reach_only_their_executor() -> None:
    values = {"shared": 1, "exec2__key": "v", "exec3__key": "w"}
    assert for_executor(values, "exec2") == {"shared": 1, "key": "v"}
    assert for_executor(values, "exec3") == {"shared": 1, "key": "w"}
    assert for_executor(values, "exec1") == {"shared": 1}


def test_double_underscore_key_wins_over_the_shared_value() -> None:
    values = {"limit": 10, "ranker": {"limit": 3}, "ranker__limit": 5}
    assert for_executor(values, "ranker") == {"limit": 5}
    assert for_executor(values, "indexer") == {"limit": 10, "ranker": {"limit": 3}}


def test_keys_with_underscores_at_either_end_stay_shared() -> None:
    values = {"__private": 1, "trailing__": 2}
    assert for_executor(values, "ranker") == values
