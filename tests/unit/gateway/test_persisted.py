"""Persisted operations on the GraphQL door: Apollo's automatic persisted queries (miss,
register, hit over POST and GET), the safelist of a manifest, and every bound checked before
the work it bounds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from meshflow.errors import ConfigError
from meshflow.gateway.http import make_app
from meshflow.gateway.persisted import PersistedOperations, PersistedQueryStore
from meshflow.gateway.server import Gateway
from meshflow.gateway.testing import Call, ScriptedTransport
from meshflow.gateway.topology import Node, Topology
from meshflow.gateway.traversal import Traversal
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import PersistedQueries, read_manifest, sha256_hex

QUERY = "{ __typename }"
OTHER = "query Other { __schema { queryType { name } } }"
MUTATION = 'mutation { post(on: "/x", docs: [{id: "a"}]) { requestId } }'


def _ext(query: str | None = None, digest: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "persistedQuery": {"version": 1, "sha256Hash": digest or sha256_hex(query or ""), **extra}
    }


# -- the store --------------------------------------------------------------------------------


def test_the_store_drops_the_least_recently_used_past_its_entries() -> None:
    store = PersistedQueryStore(max_entries=2, max_bytes=1000)
    store.put("a", "A")
    store.put("b", "B")
    assert store.get("a") == "A"  # a is now the most recently used
    store.put("c", "C")
    assert store.get("b") is None and store.get("a") == "A" and store.get("c") == "C"
    assert len(store) == 2


def test_the_store_is_bounded_by_bytes() -> None:
    store = PersistedQueryStore(max_entries=100, max_bytes=10)
    store.put("a", "x" * 6)
    store.put("b", "y" * 6)
    assert store.get("a") is None and store.get("b") == "y" * 6 and store.size == 6
    store.put("huge", "z" * 11)  # larger than the whole store: never kept
    assert store.get("huge") is None and store.get("b") == "y" * 6


def test_the_store_counts_utf8_bytes_and_replaces_a_text() -> None:
    store = PersistedQueryStore(max_entries=10, max_bytes=100)
    store.put("a", "é" * 10)
    assert store.size == 20
    store.put("a", "é" * 10)
    assert store.size == 20 and len(store) == 1


def _ops(**options: Any) -> PersistedOperations:
    return PersistedOperations(PersistedQueries(**options), GraphQLLimits(max_query_bytes=100))


def _code(exc: pytest.ExceptionInfo[Exception]) -> str:
    return str(exc.value.extensions["code"])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("extensions", "code"),
    [
        pytest.param({"persistedQuery": "abc"}, "PERSISTED_QUERY_INVALID", id="not-an-object"),
        pytest.param(_ext(QUERY, version=2), "PERSISTED_QUERY_INVALID", id="version-2"),
        pytest.param(_ext(QUERY, version=True), "PERSISTED_QUERY_INVALID", id="version-true"),
        pytest.param(_ext(digest="ab" * 31), "PERSISTED_QUERY_INVALID", id="short-hash"),
        pytest.param(_ext(digest="AB" * 32), "PERSISTED_QUERY_INVALID", id="uppercase-hash"),
        pytest.param(_ext(digest="ab" * 32 + "\n"), "PERSISTED_QUERY_INVALID", id="newline"),
        pytest.param(_ext(digest="zz" * 32), "PERSISTED_QUERY_INVALID", id="not-hex"),
        pytest.param(_ext(digest="ab" * 32), "PERSISTED_QUERY_NOT_FOUND", id="unknown"),
    ],
)
def test_a_hash_is_checked_before_it_is_looked_up(extensions: Any, code: str) -> None:
    with pytest.raises(Exception) as exc:
        _ops().resolve(None, extensions)
    assert _code(exc) == code


def test_a_text_over_the_size_limit_is_refused_before_it_is_hashed() -> None:
    huge = "{ " + "a " * 100 + "}"
    with pytest.raises(Exception) as exc:
        _ops().resolve(huge, _ext(digest="ab" * 32))
    assert _code(exc) == "QUERY_TOO_LARGE"


def test_a_text_with_another_hash_is_refused() -> None:
    with pytest.raises(Exception) as exc:
        _ops().resolve(QUERY, _ext(OTHER))
    assert _code(exc) == "PERSISTED_QUERY_HASH_MISMATCH"
    assert str(exc.value).startswith("provided sha does not match query")


def test_a_hash_with_mode_off_is_not_supported() -> None:
    with pytest.raises(Exception) as exc:
        _ops(mode="off").resolve(None, _ext(QUERY))
    assert _code(exc) == "PERSISTED_QUERY_NOT_SUPPORTED"
    assert _ops(mode="off").resolve(QUERY, None).query == QUERY


def _manifest(tmp_path: Any, *bodies: str, **override: Any) -> str:
    data = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            {"id": sha256_hex(b), "body": b, "name": f"Op{i}", "type": "query"}
            for i, b in enumerate(bodies)
        ],
        **override,
    }
    path = tmp_path / "persisted-queries.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_manifest_is_read_by_hash(tmp_path: Any) -> None:
    assert read_manifest(_manifest(tmp_path, QUERY, OTHER)) == {
        sha256_hex(QUERY): QUERY,
        sha256_hex(OTHER): OTHER,
    }


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"format": "relay"}, "apollo-persisted-query-manifest"),
        ({"version": 2}, "version 1"),
        ({"operations": {}}, "must be a list"),
        ({"operations": [{"id": "1", "body": QUERY}]}, "must be the sha256"),
        ({"operations": [{"id": "1"}]}, '"body"'),
    ],
)
def test_a_bad_manifest_is_a_config_error_naming_it(
    tmp_path: Any, override: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        read_manifest(_manifest(tmp_path, QUERY, **override))


def test_a_missing_manifest_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        read_manifest(str(tmp_path / "nope.json"))


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "safelist"},  # no manifest
        {"mode": "auto", "manifest": "x.json"},
        {"mode": "on"},
        {"max_entries": 0},
        {"max_bytes": True},
        {"cache_control": ""},
        {"cache_control": "public\r\nSet-Cookie: a=b"},
    ],
)
def test_bad_options_are_refused_at_construction(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="PersistedQueries"):
        PersistedQueries(**options)


# -- the door ---------------------------------------------------------------------------------


def _gateway() -> Gateway:
    def answer(call: Call) -> bytes:
        return call.request.SerializeToString()

    topology = Topology((Node(name="exec0", needs=("gateway",), shards=(("x",),)),))
    return Gateway(Traversal(topology, ScriptedTransport(answer)))


class Door:
    """The HTTP door of one gateway, asked in turn (its persisted queries persist)."""

    def __init__(self, persisted: PersistedQueries | None = None, **limits: Any) -> None:
        self.app = make_app(_gateway(), GraphQLLimits(**limits), persisted=persisted)

    def post(self, **body: Any) -> httpx.Response:
        return self._ask("POST", json=body)

    def get(self, **params: Any) -> httpx.Response:
        encoded = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
        return self._ask("GET", params=encoded)

    def _ask(self, method: str, **kwargs: Any) -> httpx.Response:
        async def main() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                return await http.request(method, "/graphql", timeout=10, **kwargs)

        return asyncio.run(asyncio.wait_for(main(), 30))


def _codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json().get("errors") or ()]


def test_apq_miss_then_register_then_hit_over_post() -> None:
    door = Door()
    miss = door.post(extensions=_ext(QUERY))
    assert miss.status_code == 200 and _codes(miss) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert miss.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    registered = door.post(query=QUERY, extensions=_ext(QUERY))
    assert registered.json() == {"data": {"__typename": "Query"}}
    hit = door.post(extensions=_ext(QUERY))
    assert hit.json() == {"data": {"__typename": "Query"}}


def test_apq_over_get_caches_only_as_configured() -> None:
    door = Door(PersistedQueries(cache_control="public, max-age=60"))
    miss = door.get(extensions=_ext(QUERY))
    assert _codes(miss) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert miss.headers["cache-control"] == "no-store"  # a CDN must not keep the miss
    registered = door.get(query=QUERY, extensions=_ext(QUERY))
    assert registered.json() == {"data": {"__typename": "Query"}}
    hit = door.get(extensions=_ext(QUERY))
    assert hit.json() == {"data": {"__typename": "Query"}}
    assert hit.headers["cache-control"] == "public, max-age=60"
    assert "cache-control" not in door.get(query=QUERY).headers  # not a persisted query
    assert "cache-control" not in Door().get(query=QUERY, extensions=_ext(QUERY)).headers


def test_a_mutation_is_refused_over_get_even_when_persisted() -> None:
    door = Door()
    assert door.post(query=MUTATION, extensions=_ext(MUTATION)).json()["data"]["post"]
    refused = door.get(extensions=_ext(MUTATION))
    assert refused.status_code == 400 and _codes(refused) == ["BAD_REQUEST"]
    assert refused.headers["cache-control"] == "no-store"
    fresh = Door()
    registering = fresh.get(query=MUTATION, extensions=_ext(MUTATION))
    assert registering.status_code == 400 and _codes(registering) == ["BAD_REQUEST"]
    assert _codes(fresh.post(extensions=_ext(MUTATION))) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_a_text_refused_by_the_guards_is_not_registered() -> None:
    door = Door(max_depth=1)
    deep = "{ __schema { queryType { name } } }"
    assert _codes(door.post(query=deep, extensions=_ext(deep))) == ["DEPTH_LIMIT_EXCEEDED"]
    assert _codes(door.post(extensions=_ext(deep))) == ["PERSISTED_QUERY_NOT_FOUND"]
    invalid = "{ nope }"
    assert _codes(door.post(query=invalid, extensions=_ext(invalid))) == [
        "GRAPHQL_VALIDATION_FAILED"
    ]
    assert _codes(door.post(extensions=_ext(invalid))) == ["PERSISTED_QUERY_NOT_FOUND"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"query": QUERY, "extensions": _ext(OTHER)}, "PERSISTED_QUERY_HASH_MISMATCH"),
        pytest.param({"extensions": _ext(digest="x" * 64)}, "PERSISTED_QUERY_INVALID"),
        pytest.param({"extensions": _ext(QUERY, version=3)}, "PERSISTED_QUERY_INVALID"),
        pytest.param(
            {"query": "{" + " __typename" * 40 + "}", "extensions": _ext(digest="ab" * 32)},
            "QUERY_TOO_LARGE",
        ),
    ],
)
def test_abuse_is_refused_with_a_code_in_both_media_types(body: dict[str, Any], code: str) -> None:
    door = Door(max_query_bytes=200)
    assert _codes(door.post(**body)) == [code]
    strict = door._ask("POST", json=body, headers={"accept": "application/graphql-response+json"})
    assert strict.status_code == 400 and "data" not in strict.json()


def test_safelist_runs_only_the_manifest(tmp_path: Any) -> None:
    door = Door(PersistedQueries(mode="safelist", manifest=_manifest(tmp_path, QUERY)))
    assert door.post(extensions=_ext(QUERY)).json() == {"data": {"__typename": "Query"}}
    assert door.post(query=QUERY).json() == {"data": {"__typename": "Query"}}
    assert door.get(extensions=_ext(QUERY)).json() == {"data": {"__typename": "Query"}}
    for refused in (
        door.post(query=OTHER),
        door.post(query=OTHER, extensions=_ext(OTHER)),  # no registration in this mode
        door.post(extensions=_ext(OTHER)),
        door.post(query="{"),  # refused before parsing: not a parse error
    ):
        assert _codes(refused) == ["PERSISTED_QUERY_NOT_IN_SAFELIST"]
    assert _codes(door.post(query=QUERY, extensions=_ext(OTHER))) == [
        "PERSISTED_QUERY_HASH_MISMATCH"
    ]


def test_mode_off_runs_texts_and_refuses_hashes() -> None:
    door = Door(PersistedQueries(mode="off"))
    assert _codes(door.post(extensions=_ext(QUERY))) == ["PERSISTED_QUERY_NOT_SUPPORTED"]
    assert door.post(query=QUERY).json() == {"data": {"__typename": "Query"}}
