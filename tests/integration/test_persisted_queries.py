"""Persisted operations through a real Flow's GraphQL door: Apollo's automatic persisted
queries (miss, register, hit) over POST and GET, the safelist of a manifest, and abuse."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from meshflow import Flow, PersistedQueries
from meshflow.spec.persisted import sha256_hex

StartFlow = Callable[[Flow], Flow]

SEARCH = 'query Coats { search(docs: [{id: "q"}], category: "coats", limit: 1) { docs { matches { id } } } }'  # noqa: E501
COATS = {"search": {"docs": [{"matches": [{"id": "coat-1"}]}]}}
INDEX = 'mutation { post(on: "/index", docs: [{id: "a"}]) { docs { id } } }'


def _ext(query: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}


def _post(flow: Flow, **body: Any) -> httpx.Response:
    return httpx.post(flow.graphql_url, json=body, timeout=30)


def _get(flow: Flow, **params: Any) -> httpx.Response:
    encoded = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
    return httpx.get(flow.graphql_url, params=encoded, timeout=30)


def _codes(response: httpx.Response) -> list[str]:
    return [e["extensions"]["code"] for e in response.json().get("errors") or ()]


def _manifest(folder: str, *bodies: str) -> str:
    path = os.path.join(folder, "persisted-queries.json")
    operations = [{"id": sha256_hex(b), "body": b, "name": "Op", "type": "query"} for b in bodies]
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(
            {"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations},
            fh,
        )
    return path


def _catalog(**options: Any) -> Flow:
    return Flow(**options).add(uses="executors:Catalog", name="catalog")


@pytest.mark.mesh("direct")
def test_apq_misses_registers_and_hits_over_post_and_get(start_flow: StartFlow) -> None:
    f = start_flow(_catalog(persisted_queries={"cache_control": "public, max-age=30"}))
    assert _post(f, query=SEARCH)  # the read-only field exists once the executor answered
    miss = _post(f, extensions=_ext(SEARCH))
    assert _codes(miss) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert miss.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    assert _post(f, query=SEARCH, extensions=_ext(SEARCH)).json() == {"data": COATS}
    hit = _post(f, extensions=_ext(SEARCH))
    assert hit.json() == {"data": COATS} and "cache-control" not in hit.headers

    get_hit = _get(f, extensions=_ext(SEARCH), operationName="Coats")
    assert get_hit.status_code == 200 and get_hit.json() == {"data": COATS}
    assert get_hit.headers["cache-control"] == "public, max-age=30"
    other = "{ flow { healthy } }"
    get_miss = _get(f, extensions=_ext(other))
    assert _codes(get_miss) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert get_miss.headers["cache-control"] == "no-store"
    assert "errors" not in _get(f, query=other, extensions=_ext(other)).json()
    assert "errors" not in _get(f, extensions=_ext(other)).json()

    # A mutation registered over POST still never runs over GET.
    assert "errors" not in _post(f, query=INDEX, extensions=_ext(INDEX)).json()
    refused = _get(f, extensions=_ext(INDEX))
    assert refused.status_code == 400 and _codes(refused) == ["BAD_REQUEST"]


@pytest.mark.mesh("direct")
def test_abuse_of_persisted_queries_is_refused_with_codes(start_flow: StartFlow) -> None:
    f = start_flow(_catalog(graphql_limits={"max_query_bytes": 2048, "max_depth": 3}))
    bad_hash = {"persistedQuery": {"version": 1, "sha256Hash": "not-a-hash"}}
    assert _codes(_post(f, extensions=bad_hash)) == ["PERSISTED_QUERY_INVALID"]
    assert _codes(_get(f, extensions=bad_hash)) == ["PERSISTED_QUERY_INVALID"]
    wrong = _post(f, query="{ flow { healthy } }", extensions=_ext("{ __typename }"))
    assert _codes(wrong) == ["PERSISTED_QUERY_HASH_MISMATCH"]
    huge = "{" + " __typename" * 400 + " }"
    assert _codes(_post(f, query=huge, extensions=_ext(huge))) == ["QUERY_TOO_LARGE"]
    deep = "{ __schema { types { fields { type { name } } } } }"
    assert _codes(_post(f, query=deep, extensions=_ext(deep))) == ["DEPTH_LIMIT_EXCEEDED"]
    assert _codes(_post(f, extensions=_ext(deep))) == ["PERSISTED_QUERY_NOT_FOUND"]
    strict = httpx.post(
        f.graphql_url,
        json={"extensions": bad_hash},
        headers={"accept": "application/graphql-response+json"},
        timeout=30,
    )
    assert strict.status_code == 400 and "data" not in strict.json()


@pytest.mark.mesh("direct")
def test_safelist_runs_the_manifest_only(start_flow: StartFlow, tmp_path: Any) -> None:
    manifest = _manifest(str(tmp_path), SEARCH)
    f = start_flow(_catalog(persisted_queries=PersistedQueries(mode="safelist", manifest=manifest)))
    assert _post(f, query=SEARCH).json() == {"data": COATS}  # the text of a listed operation
    assert _post(f, extensions=_ext(SEARCH)).json() == {"data": COATS}
    assert _get(f, extensions=_ext(SEARCH)).json() == {"data": COATS}
    other = "{ flow { healthy } }"
    for refused in (
        _post(f, query=other),
        _post(f, query=other, extensions=_ext(other)),  # no registration in this mode
        _post(f, extensions=_ext(other)),
        _get(f, query=other),
        _post(f, query=INDEX),
    ):
        assert _codes(refused) == ["PERSISTED_QUERY_NOT_IN_SAFELIST"], refused.text


def _subscribe(flow: Flow, payload: dict[str, Any]) -> dict[str, Any]:
    """The first message answering one ``subscribe`` over graphql-transport-ws."""
    from websockets.sync.client import connect
    from websockets.typing import Subprotocol

    url = flow.graphql_url.replace("http://", "ws://")
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
        return answer


@pytest.mark.mesh("direct")
def test_a_websocket_runs_persisted_queries_by_hash(start_flow: StartFlow) -> None:
    f = start_flow(_catalog())
    assert _post(f, query=SEARCH, extensions=_ext(SEARCH)).json() == {"data": COATS}
    hit = _subscribe(f, {"extensions": _ext(SEARCH)})
    assert hit["type"] == "next" and hit["payload"] == {"data": COATS}
    miss = _subscribe(f, {"extensions": _ext("{ flow { healthy } }")})
    assert miss["type"] == "error"
    assert miss["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    wrong = _subscribe(f, {"query": "{ flow { healthy } }", "extensions": _ext(SEARCH)})
    assert wrong["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"


@pytest.mark.mesh("direct")
def test_a_websocket_obeys_the_safelist(start_flow: StartFlow, tmp_path: Any) -> None:
    manifest = _manifest(str(tmp_path), SEARCH)
    f = start_flow(_catalog(persisted_queries={"mode": "safelist", "manifest": manifest}))
    # Over HTTP first: the door learns the read-only fields at its first HTTP request.
    assert _post(f, extensions=_ext(SEARCH)).json() == {"data": COATS}
    assert _subscribe(f, {"extensions": _ext(SEARCH)})["payload"] == {"data": COATS}
    assert _subscribe(f, {"query": SEARCH})["payload"] == {"data": COATS}
    refused = _subscribe(f, {"query": "{ flow { healthy } }"})
    assert refused["type"] == "error"
    assert refused["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_SAFELIST"
