"""The observability configs that ship with the project: observability/docker-compose.yml,
prometheus.yml and the Grafana provisioning and dashboard, each checked with the tool that
reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml
from dashboards import DASHBOARD, OBS
from systemtools import system_tool


def test_docker_compose_passes_the_compose_spec_schema() -> None:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"),
            os.path.join(OBS, "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_docker_compose_mounts_files_that_exist() -> None:
    with open(os.path.join(OBS, "docker-compose.yml"), encoding="utf-8") as fh:
        compose = yaml.safe_load(fh)
    assert set(compose["services"]) == {"jaeger", "prometheus", "grafana"}
    for service in compose["services"].values():
        assert "healthcheck" in service and service["restart"] == "unless-stopped"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert os.path.exists(os.path.join(OBS, source)), source
    assert compose["services"]["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_prometheus_config_is_valid() -> None:
    promtool = system_tool("promtool", "prometheus")
    out = subprocess.run(
        [promtool, "check", "config", os.path.join(OBS, "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_provisioning_and_dashboard() -> None:
    with open(os.path.join(OBS, "grafana", "provisioning", "datasources", "datasources.yml")) as fh:
        sources = {d["uid"]: d["type"] for d in yaml.safe_load(fh)["datasources"]}
    assert sources == {"prometheus": "prometheus", "jaeger": "jaeger"}
    with open(os.path.join(OBS, "grafana", "provisioning", "dashboards", "dashboards.yml")) as fh:
        provider = yaml.safe_load(fh)["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    with open(DASHBOARD, encoding="utf-8") as fh:
        dashboard = json.load(fh)
    assert dashboard["uid"] == "meshflow"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in sources
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    text = json.dumps(dashboard)
    for wanted in ("meshflow_executor_request_seconds_bucket", "upstream_rq_retry", "ejections"):
        assert wanted in text
