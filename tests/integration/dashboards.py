"""Where the shipped observability configs are, and the PromQL of the Grafana dashboard."""

from __future__ import annotations

import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OBS = os.path.join(ROOT, "observability")
DASHBOARD = os.path.join(OBS, "grafana", "dashboards", "meshflow.json")


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard (test_metrics runs them on a real server)."""
    with open(DASHBOARD, encoding="utf-8") as fh:
        dashboard = json.load(fh)
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
