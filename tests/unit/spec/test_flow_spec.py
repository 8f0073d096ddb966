"""FlowSpec: every option survives save -> load (YAML), checked field by field over the spec."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from meshflow import (
    AdmissionPolicy,
    CircuitBreaker,
    ConfigError,
    DynamicBatching,
    Flow,
    GraphQLLimits,
    HealthCheck,
    JWTAuth,
    OutlierDetection,
    RetryPolicy,
)
from meshflow.flow.config import load_flow, save_flow
from meshflow.spec.federation import Federation
from meshflow.spec.flow import EXECUTOR_KEYS, WITH_KEYS, DeploymentSpec, FlowSpec
from meshflow.spec.persisted import PersistedQueries, sha256_hex


def flow_values(tmp_path: str) -> dict[str, Any]:
    """A value other than the default for every ``with:`` option (a new option without one
    fails :func:`test_every_option_has_a_sample_value`)."""
    web = os.path.join(tmp_path, "web")
    manifest = os.path.join(tmp_path, "persisted-queries.json")
    with open(manifest, "w", encoding="utf-8") as fh:
        body = "{ __typename }"
        fh.write(
            '{"format": "apollo-persisted-query-manifest", "version": 1, "operations": '
            f'[{{"id": "{sha256_hex(body)}", "body": "{body}", "name": "T", "type": "query"}}]}}'
        )
    os.makedirs(web, exist_ok=True)
    return {
        "port": 23456,
        "mesh": "direct",
        "host": "0.0.0.0",
        "workspace": os.path.join(tmp_path, "data"),
        "timeout_ready": 12.5,
        "max_in_flight": 7,
        "max_request_bytes": 4096,
        "log_dir": os.path.join(tmp_path, "logs"),
        "graphql": False,
        "graphql_port": 23457,
        "graphql_limits": GraphQLLimits(max_depth=3, refusal_burst=5, max_docs=12),
        "admission": AdmissionPolicy(adaptive=False, max_queue=9, caller_share=0.25),
        "persisted_queries": PersistedQueries(
            mode="safelist", manifest=manifest, max_entries=5, cache_control="public, max-age=5"
        ),
        "federation": Federation(enabled=True),  # entities are checked against executors
        "envoy_concurrency": 2,
        "envoy_proxy": "host",
        "fork_server": False,
        "auth": JWTAuth(
            issuer="https://id.example",
            audience="shop",
            secret_env="SHOP_SECRET",
            scopes={"/index": "index:write"},
            default_scope="read",
            admin_scope="ops",
            leeway=5.0,
            cache_size=10,
        ),
        "metrics": True,
        "tracing": "25/s",
        "log_format": "json",
        "static": {"/ui": web},
        "cors": ("https://shop.example", "http://localhost:3000"),
    }


DEPLOYMENT_VALUES: dict[str, Any] = {
    "name": "enc",
    "uses": "executors:Append",
    "uses_with": {"suffix": "!"},
    "replicas": 3,
    "shards": 2,
    "needs": ("gateway",),
    "polling": {"/index": "ID", "*": "ALL"},
    "timeout": 2.5,
    "env": {"MODEL": "small"},
    "lb": "round_robin",
    "retries": RetryPolicy(attempts=2, per_try_timeout=1.5, retry_on=("reset",)),
    "health_check": HealthCheck(interval=0.5),
    "outlier_detection": OutlierDetection(consecutive_failures=9),
    "circuit_breaker": CircuitBreaker(max_requests=10),
    "uses_dynamic_batching": {"/default": DynamicBatching(preferred_batch_size=8, timeout=2.5)},
    "gpus": 1,
    "devices": ("0", "3"),
    "sync_workers": 2,
    "sync_calls": "thread",
}


def base_spec(tmp_path: str) -> FlowSpec:
    dep = Flow().add(uses="executors:Append", name="enc").deployments[0]
    return FlowSpec(workspace=os.path.join(tmp_path, "workspace"), deployments=(dep,))


def round_trip(spec: FlowSpec, tmp_path: str) -> FlowSpec:
    path = os.path.join(tmp_path, "flow.yml")
    save_flow(spec, path)
    return load_flow(path).spec


def test_every_option_has_a_sample_value(tmp_path: Any) -> None:
    assert set(flow_values(str(tmp_path))) == WITH_KEYS
    assert set(DEPLOYMENT_VALUES) == EXECUTOR_KEYS


def test_every_sample_differs_from_the_default(tmp_path: Any) -> None:
    defaults = FlowSpec()
    for name, value in flow_values(str(tmp_path)).items():
        assert getattr(defaults, name) != value, name
    dep = DeploymentSpec(name="x", uses="executors:Tag")
    for name, value in DEPLOYMENT_VALUES.items():
        assert getattr(dep, name) != value, name


@pytest.mark.parametrize("option", sorted(WITH_KEYS))
def test_each_option_survives_save_and_load(option: str, tmp_path: Any) -> None:
    spec = base_spec(str(tmp_path))
    changed = dataclasses.replace(spec, **{option: flow_values(str(tmp_path))[option]})
    assert round_trip(changed, str(tmp_path)) == changed


@pytest.mark.parametrize("key", sorted(EXECUTOR_KEYS - {"name", "uses", "needs"}))
def test_each_deployment_option_survives_save_and_load(key: str, tmp_path: Any) -> None:
    spec = base_spec(str(tmp_path))
    dep = dataclasses.replace(spec.deployments[0], **{key: DEPLOYMENT_VALUES[key]})
    changed = dataclasses.replace(spec, deployments=(dep,))
    assert round_trip(changed, str(tmp_path)) == changed


def test_every_option_at_once_survives_save_and_load(tmp_path: Any) -> None:
    dep = Flow().add(**DEPLOYMENT_VALUES).deployments[0]
    values = flow_values(str(tmp_path))
    values["envoy_proxy"] = "sidecar"  # 'host' needs mesh='envoy'; saved alone above
    spec = FlowSpec(name="shop", deployments=(dep,), **values)
    again = round_trip(spec, str(tmp_path))
    assert again == spec
    for f in dataclasses.fields(FlowSpec):  # field by field, for a readable failure
        assert getattr(again, f.name) == getattr(spec, f.name), f.name


def test_the_builder_and_the_spec_agree() -> None:
    f = Flow(name="shop", graphql_limits={"max_depth": 4}, cors=["https://a.example"])
    assert f.spec == FlowSpec.build(
        name="shop", graphql_limits=GraphQLLimits(max_depth=4), cors=("https://a.example",)
    )
    assert f.graphql_limits == GraphQLLimits(max_depth=4) and f.cors == ("https://a.example",)


def test_setting_an_option_on_the_flow_checks_it() -> None:
    f = Flow()
    f.mesh = "direct"
    assert f.spec.mesh == "direct"
    with pytest.raises(ConfigError, match="mesh='grpc' is not supported"):
        f.mesh = "grpc"


def test_a_spec_refuses_bad_values_at_construction() -> None:
    with pytest.raises(ConfigError, match="port must be a number from 1 to 65535"):
        FlowSpec(port=0)
    with pytest.raises(ConfigError, match="envoy_concurrency"):
        FlowSpec(envoy_concurrency=0)
    with pytest.raises(TypeError, match="unknown Flow option"):
        FlowSpec.build(colour="blue")
