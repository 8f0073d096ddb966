"""Accelerators of a deployment: which devices each replica process sees.

A deployment asks for ``gpus`` devices per replica (or, as in Jina, sets
``env={'CUDA_VISIBLE_DEVICES': 'RR'}``: one each). Its replicas take the devices in turn,
round-robin, from ``devices`` or else from the Flow process's own ``CUDA_VISIBLE_DEVICES``;
each replica process gets only its own in ``CUDA_VISIBLE_DEVICES``::

    Flow().add(uses=Encoder, replicas=4, gpus=1)   # CUDA_VISIBLE_DEVICES=0,1 -> 0, 1, 0, 1

Exports request them as resources instead (``nvidia.com/gpu`` in Kubernetes, an NVIDIA
device reservation in docker-compose): there the device plugin picks the devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshflow.errors import ConfigError

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
ROUND_ROBIN = "RR"


def check_devices(
    gpus: Any, devices: Any, env: Mapping[str, str], *, deployment: str
) -> tuple[int, tuple[str, ...]]:
    """``gpus`` and ``devices`` checked against each other and the deployment's ``env``."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ConfigError(f"deployment {deployment!r}: gpus must be a whole number >= 0")
    if devices is None:
        devices = ()
    if isinstance(devices, str):
        devices = [d for d in devices.split(",") if d.strip()]
    if not isinstance(devices, Sequence) or not all(
        isinstance(d, str | int) and not isinstance(d, bool) for d in devices
    ):
        raise ConfigError(
            f"deployment {deployment!r}: devices must list device ids, e.g. ['0', '1'], "
            f"got {devices!r}"
        )
    ids = tuple(str(d).strip() for d in devices)
    pinned = env.get(CUDA_VISIBLE_DEVICES)
    if pinned is not None and pinned != ROUND_ROBIN and (gpus or ids):
        raise ConfigError(
            f"deployment {deployment!r}: env sets {CUDA_VISIBLE_DEVICES}={pinned!r} and asks "
            "for gpus/devices too; use one (gpus spreads replicas over devices)"
        )
    if ids and gpus > len(ids):
        raise ConfigError(
            f"deployment {deployment!r}: gpus={gpus} per replica, but devices lists only {len(ids)}"
        )
    return gpus, ids


def gpus_per_replica(gpus: int, env: Mapping[str, str]) -> int:
    """Devices each replica takes: ``gpus``, or 1 for Jina's ``CUDA_VISIBLE_DEVICES=RR``."""
    if gpus == 0 and env.get(CUDA_VISIBLE_DEVICES) == ROUND_ROBIN:
        return 1
    return gpus


def replica_devices(
    *,
    gpus: int,
    devices: Sequence[str],
    env: Mapping[str, str],
    index: int,
    environ: Mapping[str, str],
    deployment: str,
) -> dict[str, str]:
    """The environment that shows replica ``index`` (over all shards) its own devices; ``{}``
    for a deployment that asks for none. ``environ``: the Flow process's environment."""
    wanted = gpus_per_replica(gpus, env)
    if wanted == 0:
        return {}
    pool = tuple(devices) or tuple(
        d.strip() for d in environ.get(CUDA_VISIBLE_DEVICES, "").split(",") if d.strip()
    )
    if not pool:
        raise ConfigError(
            f"deployment {deployment!r} asks for {wanted} GPU(s) per replica, but there are no "
            f"devices to spread: set {CUDA_VISIBLE_DEVICES} (e.g. 0,1) for the Flow, or "
            "devices=['0', '1'] on the deployment"
        )
    if wanted > len(pool):
        raise ConfigError(
            f"deployment {deployment!r}: {wanted} GPU(s) per replica, but only {len(pool)} "
            f"device(s): {', '.join(pool)}"
        )
    start = index * wanted
    mine = [pool[(start + k) % len(pool)] for k in range(wanted)]
    return {CUDA_VISIBLE_DEVICES: ",".join(mine)}


def without_round_robin(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without Jina's ``CUDA_VISIBLE_DEVICES=RR`` (a request, not a value)."""
    return {k: v for k, v in env.items() if not (k == CUDA_VISIBLE_DEVICES and v == ROUND_ROBIN)}
