"""Executor classes: endpoint binding, construction and runtime arguments."""

from __future__ import annotations

import os
from typing import Any

import pytest

from meshflow import ConfigError, DocumentArray, Executor, RuntimeArgs, requests
from meshflow.executor.executor import instantiate


class Base(Executor):
    @requests
    def default(self, docs: DocumentArray, **kwargs: Any) -> None:
        pass

    @requests(on=["/index", "update"])
    async def index(self, docs: DocumentArray) -> None:
        pass


class Child(Base):
    @requests(on="/index")
    def index(self, docs: DocumentArray, **kwargs: Any) -> None:  # type: ignore[override]
        pass


def test_requests_binds_default_and_named_endpoints() -> None:
    assert sorted(Base.endpoints) == ["/default", "/index", "/update"]
    assert Base.endpoints["/index"].is_async
    assert Base.endpoints["/index"].accepts == frozenset({"self", "docs"})
    assert Base.endpoints["/default"].accepts is None


def test_subclass_overrides_parent_binding() -> None:
    assert Child.endpoints["/index"].is_async is False
    assert Child.endpoints["/update"].method == "index"


def test_requests_rejects_bad_endpoint_names() -> None:
    with pytest.raises(TypeError, match="endpoint names"):
        requests(on="")
    with pytest.raises(TypeError, match="binds no endpoint"):
        requests(on=[])


def test_unknown_uses_with_argument_is_named() -> None:
    with pytest.raises(TypeError, match=r"unexpected uses_with argument.*colour"):
        instantiate(Base, {"colour": "red"}, RuntimeArgs(name="b"))


def test_runtime_args_are_set_before_init(tmp_path: object) -> None:
    seen: dict[str, Any] = {}

    class Probe(Executor):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            seen["args"] = self.runtime_args
            seen["workspace"] = self.workspace

    args = RuntimeArgs(name="probe", shard_id=1, shards=2, workspace_root=str(tmp_path))
    instantiate(Probe, {}, args)
    assert seen["args"] == args
    assert seen["workspace"] == os.path.join(str(tmp_path), "probe", "shard-1")
    assert os.path.isdir(seen["workspace"])


def test_instantiate_refuses_non_executors() -> None:
    with pytest.raises(ConfigError, match="not an Executor subclass"):
        instantiate(dict, {}, RuntimeArgs(name="x"))  # type: ignore[arg-type]


def test_state_scope_is_checked_when_the_class_is_defined() -> None:
    with pytest.raises(ConfigError, match="state_scope is 'disk'"):

        class Bad(Executor):
            state_scope = "disk"  # type: ignore[assignment]
