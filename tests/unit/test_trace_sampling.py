"""Head sampling at the gateway: a share of requests, or up to N new traces a second."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision

from meshflow import ConfigError, Flow
from meshflow.observability.tracing import (
    DEFAULT_SAMPLING,
    make_sampler,
    parse_sampling,
    sampling_arg,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def decisions(sampler: object, n: int, parent: object = None) -> list[bool]:
    return [
        sampler.should_sample(parent, trace_id=i + 1, name="x").decision  # type: ignore[attr-defined]
        == Decision.RECORD_AND_SAMPLE
        for i in range(n)
    ]


def test_a_rate_traces_a_burst_up_to_the_limit_then_refills_with_time() -> None:
    clock = Clock()
    sampler = make_sampler("5/s", clock)
    assert decisions(sampler, 8) == [True] * 5 + [False] * 3  # a second's worth, then none
    clock.now += 0.2  # one more token
    assert decisions(sampler, 3) == [True, False, False]
    clock.now += 60  # a quiet minute stores a second's worth, not a minute's
    assert sum(decisions(sampler, 20)) == 5
    clock.now += 1.0
    assert sum(decisions(sampler, 20)) == 5
    assert "5/s" in sampler.get_description()


def test_a_rate_below_one_a_second_traces_one_request_now_and_then() -> None:
    clock = Clock()
    sampler = make_sampler("0.5/s", clock)
    assert decisions(sampler, 3) == [True, False, False]
    clock.now += 1.0
    assert decisions(sampler, 1) == [False]
    clock.now += 1.0
    assert decisions(sampler, 2) == [True, False]


def test_a_request_with_a_traceparent_follows_it_whatever_the_rate() -> None:
    clock = Clock()
    sampler = make_sampler("1/s", clock)
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("caller") as caller:
        assert caller.get_span_context().trace_flags.sampled
        parent = trace.set_span_in_context(caller)
        assert decisions(sampler, 5, parent) == [True] * 5  # no token spent on them
    assert decisions(sampler, 2) == [True, False]


def test_a_share_samples_by_trace_id() -> None:
    sampler = make_sampler(0.5)
    low, high = 1, (1 << 64) - 1  # TraceIdRatioBased keeps ids below share * 2**64
    assert sampler.should_sample(None, low, "x").decision == Decision.RECORD_AND_SAMPLE
    assert sampler.should_sample(None, high, "x").decision == Decision.DROP


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (1, ("share", 1.0)),
        (0.25, ("share", 0.25)),
        ("0.1", ("share", 0.1)),
        ("20/s", ("rate", 20.0)),
    ],
)
def test_settings_parse(value: object, parsed: tuple[str, float]) -> None:
    assert parse_sampling(value) == parsed


@pytest.mark.parametrize("value", [0, 1.5, -1, "0/s", "-3/s", "inf/s", "fast", "", None, [1]])
def test_bad_settings_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="share of requests in \\(0, 1\\] or a rate"):
        parse_sampling(value)


def test_flow_tracing_values_and_what_the_gateway_is_told() -> None:
    assert sampling_arg(True) == DEFAULT_SAMPLING == "10/s"
    assert sampling_arg(1.0) == "1"
    assert sampling_arg("50/s") == "50/s"
    assert Flow(tracing="50/s").tracing == "50/s"
    for bad in (2, "often", "0/s"):
        with pytest.raises(ConfigError, match="tracing must be true, false, the share"):
            Flow(tracing=bad)


def test_a_rate_in_flow_yaml(tmp_path: object) -> None:
    path = f"{tmp_path}/flow.yml"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("jtype: Flow\nwith:\n  tracing: 50/s\nexecutors:\n  - uses: meshflow:Executor\n")
    flow = Flow.load_config(path)
    assert flow.tracing == "50/s" and sampling_arg(flow.tracing) == "50/s"
    assert sampling_arg(0.123456789) == "0.123456789"
