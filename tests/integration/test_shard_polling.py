"""Polling ID through a running Flow: writes reach the shard owning each id, answers come back
in the request's order, results add up; state kept in process memory refuses replicas."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from meshflow import ConfigError, Document, DocumentArray, Flow
from meshflow.gateway.sharding import shard_of

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
StartFlow = Callable[[Flow], Flow]
POLLING = {"/index": "ID", "/update": "ID", "/delete": "ID", "/get": "ID", "*": "ALL"}


def test_writes_reach_the_owning_shard_and_counts_add_up(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:KeyValue", name="kv", shards=3, polling=POLLING))
    docs = DocumentArray(Document(id=f"k{i}", text=f"v{i}") for i in range(300))
    [indexed] = f.post("/index", docs, request_size=300, return_responses=True)
    assert indexed.results["kv"]["indexed"] == 300
    assert sorted(indexed.results["kv"]["shards"]) == [0.0, 1.0, 2.0]
    # the answer keeps the request's order, each document marked by the shard that owns it
    assert indexed.docs.ids == docs.ids
    assert [int(d.tags["shard"]) for d in indexed.docs] == [shard_of(d.id, 3) for d in docs]

    [count] = f.post("/count", return_responses=True)
    assert count.results["kv"]["count"] == 300  # summed, not one shard's count
    assert 80 < count.results["kv"]["largest"] < 120

    changed = DocumentArray(Document(id=f"k{i}", text=f"new{i}") for i in range(0, 300, 2))
    [updated] = f.post("/update", changed, request_size=300, return_responses=True)
    assert updated.results["kv"]["updated"] == 150  # no KeyError: every id found its shard
    [deleted] = f.post(
        "/delete",
        DocumentArray(Document(id=f"k{i}") for i in range(0, 300, 3)),
        request_size=300,
        return_responses=True,
    )
    assert deleted.results["kv"]["deleted"] == 100

    got = f.post("/get", DocumentArray(Document(id=f"k{i}") for i in range(300)))
    assert got.ids == [f"k{i}" for i in range(300)]
    expected = ["" if i % 3 == 0 else f"new{i}" if i % 2 == 0 else f"v{i}" for i in range(300)]
    assert [d.text for d in got] == expected
    [count] = f.post("/count", return_responses=True)
    assert count.results["kv"]["count"] == 200


@pytest.mark.mesh("direct")
def test_a_failing_shard_fails_the_request_with_its_name(start_flow: StartFlow) -> None:
    from meshflow import RequestError

    f = start_flow(Flow().add(uses="executors:KeyValue", name="kv", shards=2, polling=POLLING))
    f.post("/index", DocumentArray(Document(id=f"k{i}") for i in range(10)))
    with pytest.raises(RequestError, match="no stored document with id 'nope'"):
        f.post("/update", DocumentArray([Document(id="k1"), Document(id="nope")]))


def test_process_state_refuses_replicas_when_added_and_when_started() -> None:
    with pytest.raises(ConfigError, match="keeps its state in process memory"):
        Flow().add(uses="executors:KeyValue", name="kv", shards=2, replicas=2)
    Flow().add(uses="executors:KeyValue", name="kv", shards=2, replicas=1)  # fine
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshflow",
            "executor",
            "--uses",
            "executors:KeyValue",
            "--port",
            "0",
            "--replicas",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([HERE, ROOT])},
    )
    assert started.returncode != 0
    assert "state_scope='process'" in started.stderr
    assert "Traceback" not in started.stderr


@pytest.mark.mesh("direct")
def test_process_state_refuses_to_scale_replicas(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:KeyValue", name="kv"))
    with pytest.raises(ConfigError, match="state_scope='process'"):
        f.scale("kv", replicas=2)
    assert [d.replicas for d in f.deployments] == [1]
