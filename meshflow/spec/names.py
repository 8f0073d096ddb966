"""Names several layers agree on: the mesh's name of a shard, and where a running Flow keeps
its state. Kept here, below the gateway, the mesh, the runtime and observability, so that
each of them can use them without importing the others."""

from __future__ import annotations

import os


def cluster_name(deployment: str, shard: int) -> str:
    """The mesh's name of one shard of a deployment (its Envoy cluster and gRPC authority).

    Deployment names cannot hold a dot, so these never collide with one another.
    """
    return f"{deployment}.shard{shard}"


def state_file(workspace: str, flow: str) -> str:
    """Where a running Flow keeps its state (``meshflow status`` reads it)."""
    return os.path.join(os.path.abspath(workspace), ".meshflow", "run", f"{flow}.json")


def targets_file(workspace: str, flow: str) -> str:
    """Where a running Flow keeps its Prometheus scrape targets (``file_sd_configs`` format)."""
    return os.path.join(os.path.abspath(workspace), ".meshflow", "run", f"{flow}.targets.json")
