"""The Flow graph as the gateway sees it: deployments, their needs, shards and replicas."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshflow.errors import ConfigError
from meshflow.spec.flow import FlowSpec
from meshflow.types import Polling

GATEWAY = "gateway"
"""The name of the Flow's entry point in ``needs``."""

POLLINGS: tuple[Polling, ...] = ("ANY", "ALL", "ID")


def normalise_polling(polling: str | Mapping[str, str], *, deployment: str) -> dict[str, Polling]:
    """Turn ``'ANY'`` or ``{'/index': 'ID', '/search': 'ALL', '*': 'ANY'}`` into a mapping.

    ``ANY``: one shard gets the request; ``ALL``: every shard, answers merged; ``ID``: each
    document goes to the shard owning its id (:mod:`meshflow.gateway.sharding`).
    """
    raw: Mapping[str, str] = {"*": polling} if isinstance(polling, str) else polling
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"deployment {deployment!r}: polling must be 'ANY', 'ALL', 'ID' or a mapping of "
            f"endpoint to one of them, got {polling!r}"
        )
    out: dict[str, Polling] = {}
    for endpoint, value in raw.items():
        upper = str(value).upper()
        chosen = next((p for p in POLLINGS if p == upper), None)
        if chosen is None:
            raise ConfigError(
                f"deployment {deployment!r}: polling {value!r} for {endpoint!r} "
                "is not 'ANY', 'ALL' or 'ID'"
            )
        out[str(endpoint)] = chosen
    out.setdefault("*", "ANY")
    return out


@dataclass(frozen=True)
class Node:
    """One deployment: where its shards' replicas listen and how requests reach them."""

    name: str
    needs: tuple[str, ...]
    shards: tuple[tuple[str, ...], ...]
    """For each shard, the addresses of its replicas."""
    polling: Mapping[str, Polling] = field(default_factory=lambda: {"*": "ANY"})
    timeout: float | None = None
    """Default per-hop timeout in seconds for calls to this deployment."""

    def polling_for(self, endpoint: str) -> Polling:
        return self.polling.get(endpoint) or self.polling.get("*", "ANY")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "needs": list(self.needs),
            "shards": [list(s) for s in self.shards],
            "polling": dict(self.polling),
            "timeout": self.timeout,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        return cls(
            name=data["name"],
            needs=tuple(data["needs"]),
            shards=tuple(tuple(s) for s in data["shards"]),
            polling=normalise_polling(data.get("polling", "ANY"), deployment=data["name"]),
            timeout=data.get("timeout"),
        )


@dataclass(frozen=True)
class Topology:
    """A validated DAG of deployments, in topological order."""

    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(check_graph(self.nodes)))

    @property
    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @property
    def leaves(self) -> tuple[str, ...]:
        """Deployments nobody needs: their outputs are merged at the gateway."""
        needed = {d for n in self.nodes for d in n.needs}
        return tuple(n.name for n in self.nodes if n.name not in needed)

    @property
    def is_chain(self) -> bool:
        """True when each deployment needs exactly the one before it."""
        previous = GATEWAY
        for node in self.nodes:
            if node.needs != (previous,):
                return False
            previous = node.name
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        return cls(tuple(Node.from_dict(n) for n in data["nodes"]))


def check_spec(spec: FlowSpec) -> None:
    """Validate the graph of ``spec`` (unknown needs, cycles) without starting anything."""
    if not spec.deployments:
        raise ConfigError("the Flow has no deployments; add one with f.add(uses=...)")
    check_graph(Node(name=d.name, needs=d.needs, shards=((),) * d.shards) for d in spec.deployments)


def check_graph(nodes: Iterable[Node]) -> list[Node]:
    """Validate names and needs, and return the nodes in a topological order.

    Raises :class:`ConfigError` for duplicate or reserved names, unknown needs and cycles.
    """
    items = list(nodes)
    names: dict[str, Node] = {}
    for node in items:
        if node.name == GATEWAY:
            raise ConfigError(f"{GATEWAY!r} is reserved for the Flow's entry point; rename it")
        if node.name in names:
            raise ConfigError(f"two deployments are named {node.name!r}; names must be unique")
        names[node.name] = node
    for node in items:
        if not node.needs:
            raise ConfigError(f"deployment {node.name!r} needs nothing; use needs='gateway'")
        for need in node.needs:
            if need != GATEWAY and need not in names:
                known = ", ".join(sorted(names)) or "none"
                raise ConfigError(
                    f"deployment {node.name!r} needs unknown deployment {need!r} "
                    f"(known: {known}, or 'gateway')"
                )
    order: list[Node] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(node: Node, path: list[str]) -> None:
        mark = state.get(node.name)
        if mark == 2:
            return
        if mark == 1:
            cycle = " -> ".join(itertools.chain(path[path.index(node.name) :], [node.name]))
            raise ConfigError(f"the needs of the Flow form a cycle: {cycle}")
        state[node.name] = 1
        for need in node.needs:
            if need != GATEWAY:
                visit(names[need], [*path, node.name])
        state[node.name] = 2
        order.append(node)

    for node in items:
        visit(node, [])
    return order
