"""Every error carries its three codes, written once, and the module docstring draws them."""

from __future__ import annotations

import re
from http import HTTPStatus

import grpc
import pytest

import meshflow
from meshflow import errors
from meshflow.errors import (
    BadRequestError,
    ExecutorError,
    ForbiddenError,
    MeshflowError,
    RequestError,
    TooManyDocumentsError,
    UnauthenticatedError,
    UnverifiedIdentityError,
    for_graphql_code,
    for_grpc_code,
    request_errors,
)


def _every_error() -> list[type[MeshflowError]]:
    found: list[type[MeshflowError]] = [MeshflowError]
    for cls in found:
        found.extend(s for s in cls.__subclasses__() if s.__module__ == errors.__name__)
    return found


ALL = _every_error()


def test_the_hierarchy_holds_every_error_of_the_module() -> None:
    declared = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, MeshflowError)
    }
    assert set(ALL) == declared
    assert {n for n in meshflow.__all__ if n.endswith(("Error", "Exceeded"))} <= {
        c.__name__ for c in ALL
    }


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_class_carries_its_three_codes(cls: type[MeshflowError]) -> None:
    own = vars(cls)
    assert {"grpc_code", "graphql_code", "http_status"} <= set(own), cls
    assert cls.grpc_code in grpc.StatusCode.__members__
    assert cls.grpc_code != "OK"
    assert re.fullmatch(r"[A-Z][A-Z_]+", cls.graphql_code)
    assert 400 <= cls.http_status < 600
    HTTPStatus(cls.http_status)  # a status HTTP knows


def _table() -> dict[str, tuple[str, str, int]]:
    rows = {}
    doc = errors.__doc__ or ""
    for line in doc.splitlines():
        match = re.fullmatch(r"(\w+)\s+([A-Z_]+)\s+([A-Z_]+)\s+(\d{3})", line.strip())
        if match:
            rows[match[1]] = (match[2], match[3], int(match[4]))
    return rows


def test_the_docstring_table_shows_the_codes_the_classes_carry() -> None:
    assert _table() == {c.__name__: (c.grpc_code, c.graphql_code, c.http_status) for c in ALL}


def test_the_docstring_tree_names_every_class() -> None:
    tree = (errors.__doc__ or "").split("::", 1)[1].split("\n\n")[1]
    drawn = re.findall(r"^[\s│├└─]*(\w+)", tree, flags=re.M)
    assert sorted(drawn) == sorted(c.__name__ for c in ALL)


def test_request_errors_come_parents_first() -> None:
    order = request_errors()
    assert order[0] is RequestError
    for i, cls in enumerate(order):
        assert all(base in order[:i] for base in cls.__mro__[1:] if base in order)


def test_a_code_maps_back_to_the_most_general_class_that_has_it() -> None:
    assert for_grpc_code("INVALID_ARGUMENT") is BadRequestError  # not TooManyDocumentsError
    assert for_grpc_code("UNAUTHENTICATED") is UnauthenticatedError
    assert for_grpc_code("INTERNAL") is RequestError  # not ExecutorError
    assert for_grpc_code("DATA_LOSS") is RequestError
    assert for_grpc_code("UNAUTHENTICATED", (BadRequestError,)) is RequestError
    assert for_graphql_code("TOO_MANY_DOCUMENTS") is TooManyDocumentsError
    assert for_graphql_code("UNAUTHENTICATED") is UnauthenticatedError
    assert for_graphql_code("EXECUTOR_ERROR") is ExecutorError
    assert for_graphql_code("DEPTH_LIMIT_EXCEEDED") is None


def test_extensions_carry_the_code_and_what_the_class_adds() -> None:
    failed = ExecutorError("boom", executor="enc", endpoint="/e", exception_type="ValueError")
    assert failed.extensions() == {
        "code": "EXECUTOR_ERROR",
        "executor": "enc",
        "endpoint": "/e",
        "exceptionType": "ValueError",
    }
    assert ForbiddenError("no", scope="write").extensions() == {
        "code": "FORBIDDEN",
        "scope": "write",
    }
    assert ForbiddenError("no").extensions() == {"code": "FORBIDDEN"}
    assert UnverifiedIdentityError("x").extensions() == {"code": "UNAUTHENTICATED"}
