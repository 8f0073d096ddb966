"""Prometheus metrics: a real Prometheus server scrapes the gateway, the executors and the
Envoy sidecars of a running Flow, through the config `meshflow export prometheus` writes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dashboards import dashboard_queries
from systemtools import system_tool

from meshflow import Document, ExecutorError, Flow

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def prometheus(tmp_path: Any, free_port: int) -> Iterator[Any]:
    """A function that starts Prometheus with a config file (once per test)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: str) -> str:
        binary = system_tool("prometheus", "prometheus")
        port = free_port
        log = open(os.path.join(str(tmp_path), "prometheus.log"), "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path}/tsdb",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "prometheus exited; see prometheus.log"
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready in 30 s")

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(url: str, promql: str, check: Any, timeout: float = 40) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    result = query(url, promql)
    while not check(result):
        if time.monotonic() > deadline:
            raise AssertionError(f"{promql} -> {result}")
        time.sleep(0.5)
        result = query(url, promql)
    return result


def by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def test_prometheus_scrapes_gateway_executors_and_sidecars(tmp_path: Any, prometheus: Any) -> None:
    folder = str(tmp_path)
    config = os.path.join(folder, "flow.yml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write(
            "name: shop\n"
            "with:\n"
            "  metrics: true\n"
            f"  workspace: {folder}/ws\n"
            "executors:\n"
            "  - {name: encoder, uses: executors:Append, replicas: 2}\n"
            "  - {name: index, uses: executors:Failing}\n"
        )
    prom_yml = os.path.join(folder, "prometheus.yml")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshflow",
            "export",
            "prometheus",
            config,
            "--out",
            prom_yml,
            "--scrape-interval",
            "1s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": TESTS},
    )
    assert out.returncode == 0, out.stderr
    url = prometheus(prom_yml)
    flow = Flow.load_config(config)
    with flow:
        targets = flow.describe()["scrape_targets"]
        # 1 gateway + its sidecar, 3 executors + 3 sidecars
        assert (
            sorted(t["component"] for t in targets)
            == ["executor"] * 3 + ["gateway"] + ["sidecar"] * 4
        )
        up = wait_for(url, "up", lambda r: len(r) == 8 and all(x["value"][1] == "1" for x in r))
        assert {r["metric"]["component"] for r in up} == {"gateway", "executor", "sidecar"}
        sent = 12
        for wave in range(3):  # over a few scrapes, so that rate() sees the counters grow
            for i in range(sent // 3):
                flow.post("/ok", [Document(text=f"doc {wave}.{i}")] * 2)
            time.sleep(1.5)
        with pytest.raises(ExecutorError, match="bad input"):
            flow.post("/fail", [Document(text="x")])

        # the request rate per executor: the traffic this test sent
        per_executor = "sum by (deployment) (meshflow_executor_requests_total)"
        counts = by(
            wait_for(
                url,
                per_executor,
                lambda r: by(r, "deployment") == {"encoder": sent + 1, "index": sent + 1},
            ),
            "deployment",
        )
        assert counts == {"encoder": sent + 1, "index": sent + 1}
        rate = by(
            query(url, "sum by (deployment) (rate(meshflow_executor_requests_total[1m]))"),
            "deployment",
        )
        assert rate["encoder"] > 0 and rate["index"] > 0
        replicas = by(
            query(url, 'sum by (replica) (meshflow_executor_requests_total{deployment="encoder"})'),
            "replica",
        )
        assert sum(replicas.values()) == sent + 1  # both replicas' series, summed
        docs = by(
            query(url, "sum by (deployment) (meshflow_executor_documents_total)"), "deployment"
        )
        assert docs["encoder"] == 2 * sent + 1
        errors = wait_for(url, "meshflow_executor_errors_total", lambda r: len(r) == 1)
        assert [(e["metric"]["deployment"], e["metric"]["exception"]) for e in errors] == [
            ("index", "ValueError")
        ]
        gateway = by(
            wait_for(
                url,
                "sum by (status) (meshflow_gateway_requests_total)",
                lambda r: "executor_error" in by(r, "status"),
            ),
            "status",
        )
        assert gateway == {"ok": sent, "executor_error": 1}
        p99 = query(
            url,
            "histogram_quantile(0.99, sum by (le, deployment) "
            "(rate(meshflow_executor_request_seconds_bucket[1m])))",
        )
        assert {r["metric"]["deployment"] for r in p99} == {"encoder", "index"}
        # Envoy's own series, from the gateway's sidecar: calls per cluster
        calls = (
            'sum by (envoy_cluster_name) (envoy_cluster_upstream_rq_total{deployment="gateway"})'
        )
        upstream = by(
            wait_for(
                url,
                calls,
                lambda r: by(r, "envoy_cluster_name").get("index_shard0", 0) >= sent + 1,
            ),
            "envoy_cluster_name",
        )
        assert upstream["encoder_shard0"] >= sent + 1
        # every query of the Grafana dashboard is valid PromQL over series that exist
        names = set(httpx.get(f"{url}/api/v1/label/__name__/values", timeout=10).json()["data"])
        for expr in dashboard_queries():
            query(url, expr)  # asserts the query succeeds
            selectors = re.sub(r"by \([^)]*\)", "", expr)  # drop the label lists
            used = set(re.findall(r"\b(?:meshflow|envoy)_[a-z0-9_]+", selectors))
            assert used <= names, (expr, used - names)
