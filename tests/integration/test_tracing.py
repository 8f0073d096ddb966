"""Tracing: one GraphQL request through a 2-executor Flow with Envoy sidecars gives one trace,
with spans from the gateway, both sidecars' hops and both executors, in a correct parent
chain, exported over OTLP/gRPC to a receiver run by the test."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from otlp import Receiver, Span, otlp_receiver

from meshflow import Client, Document, Flow

QUERY = 'mutation($on: String!) { post(on: $on, docs: [{text: "x"}]) { docs { text } } }'


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def traced(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    folder = str(tmp_path_factory.mktemp("tracing"))
    saved = {
        k: os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY")
    }
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export within 0.1 s, not 5 s
    try:
        flow = Flow(
            tracing=True,
            mesh="envoy",
            workspace=os.path.join(folder, "ws"),
            log_dir=os.path.join(folder, "logs"),
        )
        flow.add(uses="executors:Traced", name="first").add(uses="executors:Traced", name="second")
        with flow:
            yield flow
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def post(flow: Flow, on: str) -> dict[str, Any]:
    answer = httpx.post(
        flow.graphql_url, json={"query": QUERY, "variables": {"on": on}}, timeout=30
    )
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body


def names(spans: list[Span]) -> set[tuple[str, str]]:
    return {(s.service, s.name) for s in spans}


def expected_spans(on: str) -> set[tuple[str, str]]:
    endpoint = "/fail" if on == "/fail" else "/default"
    out = {
        ("meshflow-gateway", "graphql mutation post"),
        ("meshflow-gateway", "call first"),
        ("sidecar gateway", "egress first.shard0"),
        ("sidecar first-s0-r0", "ingress first-s0-r0"),
        ("first", "/meshflow.v1.ExecutorService/Process"),
        ("first", f"first {endpoint}"),
    }
    if on != "/fail":  # the walk stops at the first failure
        out |= {
            ("first", "inner work"),
            ("meshflow-gateway", "call second"),
            ("sidecar gateway", "egress second.shard0"),
            ("sidecar second-s0-r0", "ingress second-s0-r0"),
            ("second", "/meshflow.v1.ExecutorService/Process"),
            ("second", "second /default"),
            ("second", "inner work"),
        }
    return out


def collect(receiver: Receiver, trace_id: str, on: str) -> list[Span]:
    want = expected_spans(on)
    receiver.wait(lambda: want <= names(receiver.trace(trace_id)))
    return receiver.trace(trace_id)


def test_one_trace_through_gateway_sidecars_and_executors(traced: Flow, receiver: Receiver) -> None:
    post(traced, "/")  # the first request also discovers the executors' endpoints
    body = post(traced, "/")
    assert body["data"]["post"]["docs"][0]["text"] == "x!!"
    trace_id = body["extensions"]["traceId"]
    assert len(trace_id) == 32
    spans = collect(receiver, trace_id, "/")
    assert names(spans) == expected_spans("/")
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert [(r.service, r.name) for r in roots] == [("meshflow-gateway", "graphql mutation post")]
    for span in spans:  # every other span's parent is in the same trace
        assert not span.parent_id or span.parent_id in by_id, span
    assert not any(s.error for s in spans)

    def chain(service: str, name: str) -> list[tuple[str, str]]:
        span = next(s for s in spans if (s.service, s.name) == (service, name))
        path = []
        while span.parent_id:
            span = by_id[span.parent_id]
            path.append((span.service, span.name))
        return path

    assert chain("second", "inner work") == [
        ("second", "second /default"),
        ("second", "/meshflow.v1.ExecutorService/Process"),
        ("sidecar second-s0-r0", "ingress second-s0-r0"),
        ("sidecar gateway", "egress second.shard0"),
        ("meshflow-gateway", "call second"),
        ("meshflow-gateway", "graphql mutation post"),
    ]
    operation = next(s for s in spans if s.name == "graphql mutation post")
    assert operation.attributes["meshflow.endpoint"] == "/"
    assert operation.attributes["http.response.status_code"] == 200
    call = next(s for s in spans if s.name == "call first")
    assert call.attributes["meshflow.shard"] == 0
    # no span of Envoy's health checks reached the collector
    assert not [s for s in receiver.spans if "Health" in s.name or "health" in s.name]
    with open(os.path.join(str(traced.log_dir), "gateway.log"), encoding="utf-8") as fh:
        log = fh.read()
    assert f"trace={trace_id}" in log  # the access line names the trace


def test_a_failing_executor_shows_as_an_error_span(traced: Flow, receiver: Receiver) -> None:
    body = post(traced, "/fail")
    assert body["errors"][0]["extensions"]["code"] == "EXECUTOR_ERROR"
    trace_id = body["extensions"]["traceId"]
    spans = collect(receiver, trace_id, "/fail")
    failed = next(s for s in spans if s.name == "first /fail")
    assert failed.error and "traced failure" in failed.status_message
    assert "exception" in failed.events
    call = next(s for s in spans if s.name == "call first")
    assert call.error and "first: traced failure" in call.status_message
    operation = next(s for s in spans if s.name == "graphql mutation post")
    assert operation.error and operation.status_message.startswith("EXECUTOR_ERROR")


def test_requests_the_gateway_does_not_sample_leave_no_span_anywhere(
    tmp_path: Any,
) -> None:
    with otlp_receiver() as rx:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = rx.endpoint
        os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"
        try:
            flow = Flow(tracing=1e-12, mesh="envoy", workspace=str(tmp_path))
            flow.add(uses="executors:Traced", name="first").add(uses="executors:Traced")
            with flow:
                for _ in range(5):
                    body = post(flow, "/")
                    assert "traceId" not in body.get("extensions", {})
                assert flow.post("/", []) is not None
                # the sidecars were not asked to trace any of them (and sample none at random)
                for entry in flow.describe()["deployments"][0]["replicas"]:
                    stats = _stats(entry["sidecar"]["admin"])
                    assert stats["http.ingress.tracing.client_enabled"] == 0
                    assert stats["http.ingress.tracing.not_traceable"] >= 6
        finally:
            os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT")
            os.environ.pop("OTEL_BSP_SCHEDULE_DELAY")
        # the processes flushed their spans on the way out: none, sidecars' included
        assert rx.spans == []


def _stats(admin: str) -> dict[str, int]:
    from meshflow.mesh.sidecar import admin_get

    _, body = admin_get(admin, "/stats")
    return {
        k: int(v)
        for k, _, v in (line.partition(": ") for line in body.splitlines())
        if v.strip().isdigit()
    }


def test_grpc_door_and_websocket_subscriptions_are_traced(traced: Flow, receiver: Receiver) -> None:
    answer = traced.post("/", [Document(text="g")], return_responses=True)[0]
    receiver.wait(
        lambda: any(
            s.attributes.get("meshflow.request_id") == answer.request_id for s in receiver.spans
        )
    )
    root = next(
        s for s in receiver.spans if s.attributes.get("meshflow.request_id") == answer.request_id
    )
    assert (root.service, root.name, root.parent_id) == (
        "meshflow-gateway",
        "/meshflow.v1.GatewayService/Post",
        "",
    )
    assert root.attributes["meshflow.door"] == "grpc"
    want = {("second", "second /default"), ("sidecar second-s0-r0", "ingress second-s0-r0")}
    receiver.wait(lambda: want <= names(receiver.trace(root.trace_id)))

    port = traced.graphql_port
    assert port is not None
    with Client(port=port, protocol="graphql") as client:
        docs = client.post("/", [Document(text="a"), Document(text="b")], request_size=1)
    assert docs.texts == ["a!!", "b!!"]
    receiver.wait(lambda: any(s.name == "graphql subscription stream" for s in receiver.spans))
    stream = next(s for s in receiver.spans if s.name == "graphql subscription stream")
    receiver.wait(
        lambda: (
            len([s for s in receiver.trace(stream.trace_id) if s.name == "second /default"]) == 2
        )
    )
    calls = [s for s in receiver.trace(stream.trace_id) if s.name == "call first"]
    assert len(calls) == 2 and all(c.parent_id == stream.span_id for c in calls)


def test_direct_mesh_steps_name_their_replica(tmp_path: Any) -> None:
    with otlp_receiver() as rx:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = rx.endpoint
        os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"
        try:
            flow = Flow(tracing=True, mesh="direct", workspace=str(tmp_path))
            flow.add(uses="executors:Traced", name="first", replicas=2)
            with flow:
                trace_ids = [post(flow, "/")["extensions"]["traceId"] for _ in range(4)]
                rx.wait(
                    lambda: all(
                        any(s.name == "first /default" for s in rx.trace(t)) for t in trace_ids
                    )
                )
        finally:
            os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT")
            os.environ.pop("OTEL_BSP_SCHEDULE_DELAY")
        steps = [s for t in trace_ids for s in rx.trace(t) if s.name == "call first"]
        assert sorted(s.attributes["meshflow.replica"] for s in steps) == [0, 0, 1, 1]
        # each executor span hangs under the step that called its replica
        for t in trace_ids:
            spans = rx.trace(t)
            step = next(s for s in spans if s.name == "call first")
            server = next(s for s in spans if s.name == "/meshflow.v1.ExecutorService/Process")
            assert server.parent_id == step.span_id
            assert server.attributes["meshflow.deployment"] == "first"


def test_sidecars_export_their_spans_in_batches(traced: Flow) -> None:
    # Envoy's default is a gRPC export every 5 spans; the sidecars batch up to 512, or a
    # second's worth, like the Python processes' batch processor.
    from meshflow.mesh.sidecar import admin_get

    sidecars = [traced.describe()["gateway"]["sidecar"]] + [
        r["sidecar"] for d in traced.describe()["deployments"] for r in d["replicas"]
    ]
    for sidecar in sidecars:
        _, body = admin_get(sidecar["admin"], "/runtime")
        entries = json.loads(body)["entries"]
        assert entries["tracing.opentelemetry.min_flush_spans"]["final_value"] == "512"
        assert entries["tracing.opentelemetry.flush_interval_ms"]["final_value"] == "1000"


def test_a_rate_limit_traces_a_bounded_share_of_a_burst(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with otlp_receiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        flow = Flow(tracing="2/s", mesh="direct", workspace=str(tmp_path))
        flow.add(uses="executors:Traced", name="first")
        with flow:
            started = time.monotonic()
            bodies = [post(flow, "/") for _ in range(30)]
            elapsed = time.monotonic() - started
        assert all(b["data"]["post"]["docs"][0]["text"] == "x!" for b in bodies)
        traced = {b["extensions"]["traceId"] for b in bodies if "extensions" in b}
        # a second's worth at once, then 2 a second
        assert 2 <= len(traced) <= 2 + 2 * elapsed + 1, (len(traced), elapsed)
        # the processes flushed on the way out: the executor traced exactly those requests
        executor_traces = {s.trace_id for s in rx.spans if s.name == "first /default"}
        assert executor_traces == traced
