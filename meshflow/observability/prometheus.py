"""A ``prometheus.yml`` for a Flow running on this machine.

A running Flow keeps its scrape targets (gateway and executors' ``/metrics``, sidecars'
``/stats/prometheus``, each labelled with component, deployment, shard and replica) in
``<workspace>/.meshflow/run/<flow>.targets.json``, in Prometheus' ``file_sd`` format, and
rewrites it when replicas restart or scale. The config points Prometheus at that file, so
it follows the Flow without being regenerated.
"""

from __future__ import annotations

from typing import Any

import yaml

from meshflow.spec.names import targets_file


def prometheus_config(flow: str, workspace: str, scrape_interval: str = "5s") -> dict[str, Any]:
    """The Prometheus configuration that scrapes Flow ``flow`` run from ``workspace``."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": f"meshflow-{flow}",
                "file_sd_configs": [
                    {"files": [targets_file(workspace, flow)], "refresh_interval": "30s"}
                ],
            }
        ],
    }


def write_prometheus_config(path: str, config: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("# Written by `meshflow export prometheus`; targets follow the running Flow.\n")
        yaml.safe_dump(config, fh, sort_keys=False)
