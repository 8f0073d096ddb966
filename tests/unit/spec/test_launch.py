"""Launch specs: what ``to_argv`` writes, the ``meshflow`` CLI parser reads back, field by field."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from meshflow import (
    AdmissionPolicy,
    DynamicBatching,
    Federation,
    GraphQLLimits,
    JWTAuth,
    PersistedQueries,
)
from meshflow.cli import make_parser
from meshflow.errors import ConfigError
from meshflow.spec.launch import ExecutorLaunch, GatewayLaunch

EXECUTOR_BASE = ExecutorLaunch(uses="executors:Append", address="unix:/tmp/a.sock")
GATEWAY_BASE = GatewayLaunch(topology="/tmp/topology.json")

# A value other than the default for every field (a new field without one fails the test).
EXECUTOR_VALUES: dict[str, Any] = {
    "uses": "other.module:Other",
    "uses_pickle": "/tmp/cls.pickle",
    "name": "enc",
    "uses_with": {"suffix": "!", "n": [1, 2]},
    "address": "127.0.0.1:5000",
    "port": 5001,
    "host": "0.0.0.0",
    "replica_id": 2,
    "shard_id": 1,
    "replicas": 3,
    "shards": 2,
    "workspace": "/data",
    "sync_workers": 4,
    "sync_calls": "thread",
    "drain_timeout": 2.5,
    "ready_file": "/tmp/ready",
    "gateway_key": "-----BEGIN PUBLIC KEY-----",
    "gateway_key_file": "/etc/key.pub",
    "metrics_port": 9100,
    "metrics_host": "0.0.0.0",
    "tracing": True,
    "trace_sampling": "20/s",
    "dynamic_batching": {
        "/encode": DynamicBatching(preferred_batch_size=8, timeout=2.5),
        "/search": DynamicBatching(preferred_batch_size=32),
    },
}
# Fields that exclude another one: set together with the other unset.
EXCLUSIVE = {"uses_pickle": {"uses": None}, "port": {"address": None}}

GATEWAY_VALUES: dict[str, Any] = {
    "topology": '{"nodes": []}',
    "host": "0.0.0.0",
    "port": 50051,
    "mesh": "envoy",
    "egress": "unix:/run/egress.sock",
    "max_in_flight": 7,
    "max_request_bytes": 4096,
    "drain_timeout": 1.5,
    "graphql_port": 8080,
    "graphql_limits": GraphQLLimits(max_depth=3, refusal_burst=5),
    "admission": AdmissionPolicy(adaptive=False, max_queue=9, caller_share=0.25),
    "persisted_queries": PersistedQueries(
        mode="safelist", manifest="/app/pq.json", max_bytes=1000, cache_control="max-age=9"
    ),
    "federation": Federation(enabled=True, entities={"Product": "/products"}),
    "cors": ("https://shop.example", "http://localhost:3000"),
    "static": {"/ui": "/app/web"},
    "auth": JWTAuth(issuer="i", audience="a", secret_env="SECRET", scopes={"/x": "x:r"}),
    "signing_key_file": "-",
    "ready_file": "/tmp/gw.ready",
    "metrics_port": 0,
    "metrics_host": "0.0.0.0",
    "tracing": True,
    "trace_sampling": "0.5",
}


def _round_trip(launch: Any) -> Any:
    args = make_parser().parse_args(launch.to_argv())
    return type(launch).from_args(args)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_every_executor_field_has_a_sample_value() -> None:
    assert set(EXECUTOR_VALUES) == _fields(ExecutorLaunch)


def test_every_gateway_field_has_a_sample_value() -> None:
    assert set(GATEWAY_VALUES) == _fields(GatewayLaunch)


@pytest.mark.parametrize("name", sorted(EXECUTOR_VALUES))
def test_each_executor_field_survives_argv_and_the_cli_parser(name: str) -> None:
    launch = dataclasses.replace(
        EXECUTOR_BASE, **{name: EXECUTOR_VALUES[name], **EXCLUSIVE.get(name, {})}
    )
    assert getattr(EXECUTOR_BASE, name) != getattr(launch, name) == EXECUTOR_VALUES[name]
    assert _round_trip(launch) == launch


@pytest.mark.parametrize("name", sorted(GATEWAY_VALUES))
def test_each_gateway_field_survives_argv_and_the_cli_parser(name: str) -> None:
    launch = dataclasses.replace(GATEWAY_BASE, **{name: GATEWAY_VALUES[name]})
    assert getattr(GATEWAY_BASE, name) != getattr(launch, name) == GATEWAY_VALUES[name]
    assert _round_trip(launch) == launch


def test_every_field_at_once_survives_argv_and_the_cli_parser() -> None:
    executor = ExecutorLaunch(
        **{
            k: v
            for k, v in EXECUTOR_VALUES.items()
            if k not in ("uses_pickle", "port", "gateway_key")
        }
    )
    assert _round_trip(executor) == executor
    gateway = GatewayLaunch(**GATEWAY_VALUES)
    assert _round_trip(gateway) == gateway


def test_defaults_survive_too() -> None:
    assert _round_trip(EXECUTOR_BASE) == EXECUTOR_BASE
    assert _round_trip(GATEWAY_BASE) == GATEWAY_BASE


def test_a_launch_needs_one_class_and_one_address() -> None:
    with pytest.raises(ConfigError, match="exactly one of uses and uses_pickle"):
        ExecutorLaunch(address="unix:/x")
    with pytest.raises(ConfigError, match="exactly one of address and port"):
        ExecutorLaunch(uses="a:B", address="unix:/x", port=3)
    with pytest.raises(ConfigError, match="at most one of gateway_key"):
        ExecutorLaunch(uses="a:B", port=3, gateway_key="k", gateway_key_file="f")


def test_bad_json_in_the_arguments_is_a_config_error() -> None:
    args = make_parser().parse_args(
        ["executor", "--uses", "a:B", "--port", "1", "--uses-with", "["]
    )
    with pytest.raises(ConfigError, match="--uses-with is not valid JSON"):
        ExecutorLaunch.from_args(args)
