"""Typed endpoint parameters: a dataclass as the type of an endpoint's ``parameters``.

::

    @dataclass
    class SearchParams:
        limit: int = 10
        category: str | None = None

    class Indexer(Executor):
        @requests(on='/search', read_only=True)
        def search(self, docs, parameters: SearchParams, **kwargs): ...

The runtime builds a ``SearchParams`` from the request's parameters (numbers arrive as JSON
floats and are turned back into ints where the field says so), and the gateway offers the
fields as typed GraphQL arguments.

A request's parameters are shared by every executor it visits: each typed endpoint takes the
fields it declares and leaves the other keys to the other executors (an indexer's ``filter``
is no concern of a ranker). A key named after an executor holds parameters for it alone:
``{"limit": 10, "ranker": {"limit": 3}}`` gives the ranker ``limit=3``, everyone else 10.
Jina's form is accepted too: ``{"ranker__limit": 3}`` gives ``limit=3`` to the ranker alone,
and no executor sees the key ``ranker__limit`` itself (any key ``<name>__<key>`` is addressed
to the executor ``<name>``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from typing import Any

from meshflow.errors import BadRequestError

_SCALARS: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool"}


def params_type(fn: Callable[..., Any]) -> type | None:
    """The dataclass annotated on ``fn``'s ``parameters`` argument, if any."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: no typed parameters
        return None
    hint = hints.get("parameters")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    return None


def field_default(f: dataclasses.Field[Any]) -> tuple[bool, Any]:
    """``(required, default)`` of a dataclass field: required when it has no default nor
    default factory, else the value it gets when not given (None when required)."""
    if f.default is not dataclasses.MISSING:
        return False, f.default
    if f.default_factory is not dataclasses.MISSING:
        return False, f.default_factory()
    return True, None


def describe(cls: type) -> list[dict[str, Any]]:
    """Each field of the dataclass ``cls``: name, type, list, required, default_json."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        kind, is_list = _kind(hints[f.name])
        required, default = field_default(f)
        out.append(
            {
                "name": f.name,
                "type": kind,
                "list": is_list,
                "required": required,
                "default_json": "" if required else json.dumps(default),
            }
        )
    return out


def _kind(hint: Any) -> tuple[str, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _kind(args[0])
        return "json", False
    if origin in (list, tuple, set, frozenset):
        items = typing.get_args(hint)
        inner = _SCALARS.get(items[0], "json") if items else "json"
        return inner, True
    return _SCALARS.get(hint, "json"), False


def build(cls: type, values: dict[str, Any], endpoint: str) -> Any:
    """An instance of the dataclass ``cls`` from request parameters (the keys it declares;
    the others are other executors' business)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in names:
            continue
        kind, is_list = _kind(hints[name])
        if kind == "int":
            value = [_int(v, name) for v in value] if is_list else _int(value, name)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise BadRequestError(f"endpoint {endpoint!r}: {exc}") from None


def for_executor(values: dict[str, Any], executor: str) -> dict[str, Any]:
    """The parameters ``executor`` sees: the shared ones, overridden by ``values[executor]``
    when that is a mapping, then by the keys ``<executor>__<key>``; keys addressed to other
    executors that way are dropped.

    >>> for_executor({"k": 1, "ranker": {"k": 2}, "ranker__top": 3, "index__k": 4}, "ranker")
    {'k': 2, 'top': 3}
    """
    shared: dict[str, Any] = {}
    addressed: dict[str, Any] = {}
    for key, value in values.items():
        name, sep, own_key = key.partition("__")
        if sep and name and own_key:
            if name == executor:
                addressed[own_key] = value
            continue
        shared[key] = value
    own = shared.get(executor)
    if isinstance(own, dict):
        del shared[executor]
        shared.update(own)
    if not addressed:
        return shared
    return {**shared, **addressed}


def _int(value: Any, name: str) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, int):
        return value
    raise BadRequestError(f"parameter {name!r} must be a whole number, got {value!r}")
