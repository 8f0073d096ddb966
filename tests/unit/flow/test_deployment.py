"""Deployments of stateful Executors: replicas refused for process state, writes that reach
any shard named in the log."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from meshflow import ConfigError, DocumentArray, Executor, Flow, requests


class Memory(Executor):
    state_scope = "process"

    @requests(on="/index")
    def index(self, docs: DocumentArray, **kwargs: Any) -> None:
        pass

    @requests(on="/search", read_only=True)
    def search(self, docs: DocumentArray, **kwargs: Any) -> None:
        pass


def test_process_state_refuses_replicas_with_advice() -> None:
    with pytest.raises(ConfigError, match=r"'mem'.*replicas=1 and scale with shards"):
        Flow().add(uses=Memory, name="mem", replicas=2)


def test_writes_polled_any_on_stateful_shards_are_logged(caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="meshflow.flow"):
        Flow().add(uses=Memory, name="mem", shards=2, polling={"/search": "ALL"})
    assert "'mem'" in caplog.text and "/index polled ANY" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meshflow.flow"):
        Flow().add(uses=Memory, name="mem", shards=2, polling={"/index": "ID", "*": "ALL"})
        Flow().add(uses="services.ranker:Ranker", name="rank", shards=2)  # stateless
    assert caplog.text == ""
