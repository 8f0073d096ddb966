"""The Flow graph: validation, order, leaves and chains."""

from __future__ import annotations

import pytest

from meshflow import ConfigError
from meshflow.gateway.topology import Node, Topology


def node(name: str, *needs: str) -> Node:
    return Node(name=name, needs=needs or ("gateway",), shards=(("unix:/x",),))


def test_nodes_come_back_in_topological_order() -> None:
    topo = Topology((node("c", "a", "b"), node("b", "a"), node("a")))
    assert [n.name for n in topo.nodes] == ["a", "b", "c"]
    assert topo.leaves == ("c",)
    assert not topo.is_chain


def test_chain_is_detected() -> None:
    assert Topology((node("a"), node("b", "a"), node("c", "b"))).is_chain


def test_several_leaves() -> None:
    assert Topology((node("a"), node("b"))).leaves == ("a", "b")


def test_cycle_is_named() -> None:
    with pytest.raises(ConfigError, match="cycle: a -> b -> a"):
        Topology((node("a", "b"), node("b", "a")))


def test_gateway_name_is_reserved() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        Topology((node("gateway"),))


def test_round_trips_through_dict() -> None:
    topo = Topology((node("a"), node("b", "a")))
    assert Topology.from_dict(topo.to_dict()) == topo
