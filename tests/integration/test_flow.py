"""A Flow of real executor processes behind a real gateway (mesh='direct')."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest

from meshflow import Client, Document, DocumentArray, ExecutorError, Flow

StartFlow = Callable[[Flow], Flow]


def test_seed_program_prints_hello_world_twice(tmp_path: object) -> None:
    script = os.path.join(str(tmp_path), "seed.py")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(
            textwrap.dedent(
                """
                from meshflow import DocumentArray, Executor, Flow, requests

                class MyExec(Executor):
                    @requests
                    async def foo(self, docs: DocumentArray, **kwargs):
                        for d in docs:
                            d.text += 'hello, world!'

                f = Flow().add(uses=MyExec).add(uses=MyExec)
                with f:
                    r = f.post('/', DocumentArray.empty(2))
                    print(r.texts)
                """
            )
        )
    out = subprocess.run(
        [sys.executable, script],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['hello, world!hello, world!', 'hello, world!hello, world!']"


def test_chain_runs_executors_in_order_with_uses_with(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Append", uses_with={"suffix": "a"})
        .add(uses="executors:Append", uses_with={"suffix": "b"})
    )
    docs = f.post("/", DocumentArray(Document(text=str(i)) for i in range(5)))
    assert docs.texts == ["0ab", "1ab", "2ab", "3ab", "4ab"]


def test_results_in_request_order_across_many_requests(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append", replicas=2))
    inputs = DocumentArray(Document(text=str(i)) for i in range(250))
    docs = f.post("/", inputs, request_size=7)
    assert docs.texts == [f"{i}x" for i in range(250)]
    assert docs.ids == inputs.ids


def test_branches_join_and_merge_by_document_id(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Tag", name="left", needs="gateway")
        .add(uses="executors:Tag", name="right", needs="gateway")
        .add(uses="executors:Tag", name="join", needs=["left", "right"])
    )
    docs = f.post("/", DocumentArray.empty(3), parameters={"embed": "right"})
    for d in docs:
        assert d.tags == {"left": True, "right": True, "join": True}
        assert d.embedding is not None and d.embedding.tolist() == [0, 1, 2, 3]


def test_several_leaves_are_all_merged_at_the_gateway(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Tag", name="a", needs="gateway")
        .add(uses="executors:Tag", name="b", needs="gateway")
    )
    docs = f.post("/", DocumentArray.empty(2))
    assert [sorted(d.tags) for d in docs] == [["a", "b"], ["a", "b"]]


def test_executor_dict_results_reach_the_caller(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Results", name="counter"))
    [response] = f.post(
        "/count", DocumentArray.empty(4), parameters={"k": "v"}, return_responses=True
    )
    assert response.results == {"counter": {"count": 4.0, "echo": {"k": "v"}}}
    assert len(response.docs) == 4


def test_endpoint_returning_documentarray_replaces_docs(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Replace"))
    docs = f.post("/replace", DocumentArray([Document(text="a"), Document(text="b")]))
    assert docs.texts == ["new a", "new b"]


def test_unknown_endpoint_passes_docs_through_unchanged(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Failing"))
    inputs = DocumentArray([Document(text="keep", embedding=np.ones(3, dtype=np.float16))])
    docs = f.post("/nothing-here", inputs)
    assert docs.texts == ["keep"] and docs[0].embedding.dtype == np.float16


def test_target_executor_runs_only_that_deployment(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Append", name="a", uses_with={"suffix": "a"})
        .add(uses="executors:Append", name="b", uses_with={"suffix": "b"})
    )
    assert f.post("/", Document(text=""), target_executor="b").texts == ["b"]


def test_failing_endpoint_names_executor_and_flow_keeps_serving(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Failing", name="checker"))
    with pytest.raises(ExecutorError) as info:
        f.post("/fail", DocumentArray.empty(1))
    err = info.value
    assert (err.executor, err.endpoint, err.exception_type) == ("checker", "/fail", "ValueError")
    assert "bad input for failing" in str(err)
    assert "Traceback" not in str(err)
    assert "Traceback" in f.log_tail("checker", lines=200)
    assert f.post("/ok", DocumentArray.empty(1)).texts == ["ok"]


def test_replicas_share_the_load(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Who", replicas=3))
    docs = f.post("/", DocumentArray.empty(30), request_size=1)
    assert {d.tags["replica"] for d in docs} == {0.0, 1.0, 2.0}


def test_short_sync_endpoints_run_on_the_loop_and_in_thread_ones_off_it(
    start_flow: StartFlow,
) -> None:
    flow = Flow().add(uses="executors:Who", name="who")
    f = start_flow(flow.add(uses="executors:PinnedThread", name="pinned"))
    [first] = f.post("/", DocumentArray.empty(1))
    [doc] = f.post("/", DocumentArray.empty(1))
    assert first.tags["thread"].startswith("who")  # a first call, in the worker thread
    assert doc.tags["thread"] == "MainThread"
    assert first.tags["pinned_thread"].startswith("pinned")
    assert doc.tags["pinned_thread"].startswith("pinned")


def test_sync_calls_thread_keeps_a_deployments_sync_methods_in_its_threads(
    start_flow: StartFlow,
) -> None:
    f = start_flow(Flow().add(uses="executors:Who", name="who", sync_calls="thread"))
    threads = [f.post("/", DocumentArray.empty(1))[0].tags["thread"] for _ in range(3)]
    assert all(t.startswith("who") for t in threads), threads


def test_sharded_index_spreads_writes_and_searches_all_shards(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow().add(
            uses="executors:MemoryIndex",
            name="index",
            shards=2,
            polling={"/index": "ANY", "/search": "ALL", "*": "ALL"},
        )
    )
    corpus = DocumentArray(
        Document(id=f"d{i}", embedding=np.array([i, 0], dtype=np.float32)) for i in range(10)
    )
    f.post("/index", corpus, request_size=1)
    [counts] = f.post("/count", return_responses=True)
    assert counts.results["index"] == {"shard0": 5.0, "shard1": 5.0}
    query = Document(embedding=np.array([3.2, 0], dtype=np.float32))
    [result] = f.post("/search", query, parameters={"k": 3})
    assert [m.id for m in result.matches] == ["d3", "d4", "d2"]
    assert {m.tags["shard"] for m in result.matches} == {0.0, 1.0}
    scores = [m.scores["euclidean"] for m in result.matches]
    assert scores == sorted(scores)


def test_workspace_is_per_deployment_and_shard(start_flow: StartFlow, workspace: str) -> None:
    f = start_flow(Flow().add(uses="executors:Workspace", name="w", shards=2, polling="ALL"))
    [doc] = f.post("/", DocumentArray.empty(1))
    assert doc.uri.startswith(os.path.join(workspace, "w", "shard-"))
    assert os.path.exists(os.path.join(workspace, "w", "shard-0", "hits.txt"))
    assert os.path.exists(os.path.join(workspace, "w", "shard-1", "hits.txt"))


def test_client_connects_to_a_running_flow(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Append"))
    assert f.port is not None
    with Client(port=f.port) as client:
        assert client.post("/", Document(text="c")).texts == ["cx"]


def test_flow_with_fixed_port_serves_on_it(start_flow: StartFlow, free_port: int) -> None:
    f = start_flow(Flow(port=free_port).add(uses="executors:Append"))
    assert f.port == free_port
    with Client(port=free_port) as client:
        assert client.post("/", Document(text="p")).texts == ["px"]


def test_exit_leaves_no_process_behind(workspace: str) -> None:
    f = Flow(workspace=workspace).add(uses="executors:Append", replicas=2).add(uses="executors:Who")
    with f:
        pids = list(f.pids.values())
        assert len(pids) == 8  # 3 executors and the gateway, each with its Envoy sidecar
    for pid in pids:
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; the Flow reaped its children, so this is a live pid.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def test_join_of_the_gateway_input_with_a_branch(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Tag", name="executor0", needs="gateway")
        .add(uses="executors:Tag", name="executor1", needs=["gateway", "executor0"])
    )
    docs = f.post("/", DocumentArray([Document(text="a"), Document(text="b")]))
    assert docs.texts == ["a", "b"]
    for d in docs:
        assert d.tags == {"executor0": True, "executor1": True}


def test_jina_style_parameters_reach_only_the_named_executor(start_flow: StartFlow) -> None:
    f = start_flow(
        Flow()
        .add(uses="executors:Results", name="exec1")
        .add(uses="executors:Results", name="exec2")
    )
    [response] = f.post(
        "/count",
        DocumentArray.empty(1),
        parameters={"shared": 1, "exec2__key": "v", "exec1": {"mine": True}},
        return_responses=True,
    )
    assert response.results["exec1"]["echo"] == {"shared": 1.0, "mine": True}
    # meshflow's own form stays visible to the others; Jina's form does not.
    assert response.results["exec2"]["echo"] == {"shared": 1.0, "key": "v", "exec1": {"mine": True}}
