"""What a Flow needs of the hub when it starts: each ``hub://`` deployment resolved to one
exact version, its environment built (or found in the cache), and the command that runs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meshflow.executor.executor import Executor
from meshflow.hub.environment import (
    Environment,
    Progress,
    default_cache_dir,
    ensure_environment,
    stderr_progress,
)
from meshflow.hub.index import Hub, open_hub
from meshflow.hub.layer import runtime_layer
from meshflow.hub.reference import HubRef, is_hub_ref
from meshflow.hub.resolve import Resolved, resolve
from meshflow.spec.flow import FlowSpec


@dataclass(frozen=True)
class HubExecutor:
    """One hub deployment of a running Flow: which executor, which version, which
    environment, and how to start its processes."""

    deployment: str
    ref: str
    resolved: Resolved
    environment: Environment
    runtime_path: str
    index_url: str = ""
    """The hub's index (what an exported image's installer may reach, when it is a URL)."""

    @property
    def name(self) -> str:
        return self.resolved.metadata.name

    @property
    def version(self) -> str:
        return self.resolved.metadata.version

    @property
    def executor(self) -> str:
        """``'package.module:Class'`` inside the environment."""
        return self.resolved.metadata.executor

    def command(self, argv: list[str]) -> list[str]:
        """``meshflow`` with ``argv`` on the environment's interpreter; ``-I``: neither the
        working directory nor PYTHONPATH leaks the Flow's packages in."""
        return [self.environment.python, "-I", "-m", "meshflow", *argv]

    def env(self) -> dict[str, str]:
        return {"MESHFLOW_RUNTIME_PATH": self.runtime_path}

    def to_dict(self) -> dict[str, Any]:
        """What ``describe()``, ``meshflow status`` and the exports show."""
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            "environment": self.environment.short_key,
            "sha256": self.resolved.sha256,
            "executor": self.executor,
            "requirements": list(self.resolved.metadata.requirements),
        }


def hub_placeholder(ref: HubRef) -> type[Executor]:
    """The class the Flow builder holds for a hub deployment: it lives in its own
    environment, so its endpoints are learnt from the running executor (as for any
    executor: the gateway asks each replica)."""
    return type(
        f"HubExecutor[{ref.name}]",
        (Executor,),
        {"__module__": __name__, "__doc__": f"The hub executor {ref}.", "hub_ref": str(ref)},
    )


def hub_deployments(spec: FlowSpec) -> dict[str, str]:
    """Deployment name -> its ``hub://`` reference, for the deployments that use the hub."""
    return {d.name: d.ref for d in spec.deployments if d.ref is not None and is_hub_ref(d.ref)}


def prepare(
    refs: Mapping[str, str],
    *,
    hub: Hub | None = None,
    cache_dir: str | None = None,
    progress: Progress = stderr_progress,
) -> dict[str, HubExecutor]:
    """Resolve and build every hub deployment of ``refs`` (deployment -> reference)."""
    if not refs:
        return {}
    hub = hub or open_hub()
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    layer = runtime_layer(cache_dir)
    out = {}
    for deployment, text in refs.items():
        resolved = resolve(HubRef.parse(text), hub, cache_dir)
        env = ensure_environment(resolved, hub, cache_dir, progress)
        out[deployment] = HubExecutor(deployment, text, resolved, env, layer, hub.index_url)
    return out
