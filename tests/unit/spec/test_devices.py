"""Devices: replicas take accelerators in turn, each sees only its own; exports request them."""

from __future__ import annotations

import os
from typing import Any

import pytest
import yaml

from meshflow import ConfigError, Flow
from meshflow.spec.devices import replica_devices


def assigned(gpus: int, replicas: int, **kwargs: Any) -> list[str | None]:
    options: dict[str, Any] = {"devices": (), "env": {}, "environ": {}, **kwargs}
    return [
        replica_devices(gpus=gpus, index=i, deployment="enc", **options).get("CUDA_VISIBLE_DEVICES")
        for i in range(replicas)
    ]


def test_replicas_take_the_flows_devices_round_robin() -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "0,1,2"}
    assert assigned(1, 4, environ=environ) == ["0", "1", "2", "0"]
    assert assigned(2, 2, devices=("4", "5", "6", "7")) == ["4,5", "6,7"]
    assert assigned(2, 3, devices=("0", "1", "2")) == ["0,1", "2,0", "1,2"]


def test_the_deployments_devices_win_over_the_flows() -> None:
    assert assigned(1, 2, devices=("3",), environ={"CUDA_VISIBLE_DEVICES": "0,1"}) == ["3", "3"]


def test_jinas_round_robin_env_is_one_device_each() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "RR"}
    assert assigned(0, 3, env=env, environ={"CUDA_VISIBLE_DEVICES": "0,1"}) == ["0", "1", "0"]


def test_no_gpus_asked_sets_nothing() -> None:
    assert assigned(0, 2, environ={"CUDA_VISIBLE_DEVICES": "0"}) == [None, None]


def test_gpus_without_devices_is_a_config_error_that_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="set CUDA_VISIBLE_DEVICES"):
        assigned(1, 1)
    with pytest.raises(ConfigError, match=r"2 GPU\(s\) per replica, but only 1 device"):
        assigned(2, 1, environ={"CUDA_VISIBLE_DEVICES": "0"})


def test_bad_device_options_are_refused_when_the_deployment_is_added() -> None:
    with pytest.raises(ConfigError, match="gpus must be a whole number >= 0"):
        Flow().add(uses="executors:Append", gpus=-1)
    with pytest.raises(ConfigError, match="devices lists only 1"):
        Flow().add(uses="executors:Append", gpus=2, devices=["0"])
    with pytest.raises(ConfigError, match="use one"):
        Flow().add(uses="executors:Append", gpus=1, env={"CUDA_VISIBLE_DEVICES": "0"})
    dep = Flow().add(uses="executors:Append", gpus=1, devices=[0, "1"]).deployments[0]
    assert (dep.gpus, dep.devices) == (1, ("0", "1"))


def test_kubernetes_requests_nvidia_gpus_and_compose_reserves_them(tmp_path: Any) -> None:
    flow = Flow(name="gpu").add(uses="services.ranker:Ranker", name="enc", replicas=2, gpus=2)
    flow.add(uses="services.ranker:Ranker", name="rr", env={"CUDA_VISIBLE_DEVICES": "RR"})
    out = str(tmp_path / "k8s")
    flow.to_kubernetes_yaml(out)
    limits = {}
    for name in ("enc-s0", "rr-s0"):
        with open(os.path.join(out, f"{name}.yaml"), encoding="utf-8") as fh:
            [deployment] = [m for m in yaml.safe_load_all(fh) if m and m["kind"] == "Deployment"]
        executor = deployment["spec"]["template"]["spec"]["containers"][0]
        limits[name] = executor["resources"]["limits"].get("nvidia.com/gpu")
        assert "CUDA_VISIBLE_DEVICES" not in {e["name"] for e in executor["env"]}
    assert limits == {"enc-s0": "2", "rr-s0": "1"}

    written = flow.to_docker_compose_yaml(str(tmp_path / "compose"))
    with open(written[0], encoding="utf-8") as fh:
        services = yaml.safe_load(fh)["services"]
    reserved = services["enc-s0-r0"]["deploy"]["resources"]["reservations"]["devices"]
    assert reserved == [{"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}]
    assert "CUDA_VISIBLE_DEVICES" not in services["rr-s0-r0"]["environment"]
