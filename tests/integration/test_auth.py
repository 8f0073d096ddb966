"""JWT auth on every door of a running Flow: GraphQL over HTTP, ``POST /post``, GraphQL over
WebSocket and gRPC. Each bad token is refused with the door's own answer, reaches no executor,
and leaves one log line without the token; good tokens (either key of a rotating JWKS) pass
and the executors see the caller's identity, never the token."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from authkeys import AUDIENCE, ISSUER, REFUSED, SCOPES, Keys, refused_tokens
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from meshflow import (
    AsyncClient,
    Client,
    Document,
    DocumentArray,
    Flow,
    ForbiddenError,
    JWTAuth,
    UnauthenticatedError,
)
from meshflow.proto.v1 import data_request_pb2
from meshflow.wire import GATEWAY_POST

POST = """
mutation($on: String!, $docs: [DocumentInput!]) {
  post(on: $on, docs: $docs) { docs { id } results }
}
"""
STREAM = """
subscription($on: String!, $batches: [[DocumentInput!]!]!) {
  stream(on: $on, batches: $batches) { batch results }
}
"""
DOORS = ["graphql", "post", "websocket", "grpc"]


class Refused(Exception):
    """What a door answered to a refused request: ``kind`` is UNAUTHENTICATED/FORBIDDEN."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys.generate()


@pytest.fixture(scope="module")
def secured(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    """Two executors in a chain behind a gateway that checks RS256 tokens from a JWKS."""
    folder = str(tmp_path_factory.mktemp("auth"))
    paths = keys.write(folder)
    flow = Flow(
        mesh="direct",
        workspace=os.path.join(folder, "ws"),
        log_dir=os.path.join(folder, "logs"),
        auth=JWTAuth(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_file=paths["jwks"],
            scopes=SCOPES,
            default_scope="default:use",
        ),
    )
    flow.add(uses="executors:Guarded", name="first").add(uses="executors:Guarded", name="second")
    flow.token = keys.token(scope="meshflow:admin")
    with flow:
        yield flow


def calls(flow: Flow) -> tuple[int, int]:
    """How many requests each executor served (asked with an admin token)."""
    results = flow.client.send("/calls")[0].results
    return results["first"]["calls"], results["second"]["calls"]


def gateway_log(flow: Flow) -> str:
    assert flow.log_dir is not None
    with open(os.path.join(flow.log_dir, "gateway.log"), encoding="utf-8") as fh:
        return fh.read()


def send(flow: Flow, door: str, token: str | None, on: str = "/index") -> dict[str, Any]:
    """One request through ``door``; returns the executors' results or raises Refused."""
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    docs = [{"id": "d1", "text": "hello"}]
    if door == "graphql":
        answer = httpx.post(
            flow.graphql_url,
            json={"query": POST, "variables": {"on": on, "docs": docs}},
            headers=headers,
            timeout=30,
        )
        body = answer.json()
        if answer.status_code == 401:
            assert answer.headers["www-authenticate"].startswith('Bearer realm="meshflow"')
            assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
            raise Refused("UNAUTHENTICATED", body["errors"][0]["message"])
        assert answer.status_code == 200, answer.text
        if body.get("errors"):
            error = body["errors"][0]
            raise Refused(error["extensions"]["code"], error["message"])
        results: dict[str, Any] = body["data"]["post"]["results"]
        return results
    if door == "post":
        url = flow.graphql_url.removesuffix("/graphql") + "/post"
        answer = httpx.post(url, json={"on": on, "docs": docs}, headers=headers, timeout=30)
        body = answer.json()
        if answer.status_code in (401, 403):
            code = body["errors"][0]["extensions"]["code"]
            challenge = answer.headers["www-authenticate"]
            assert challenge.startswith("Bearer")
            if answer.status_code == 403:
                assert 'error="insufficient_scope"' in challenge
            assert code == {401: "UNAUTHENTICATED", 403: "FORBIDDEN"}[answer.status_code]
            raise Refused(code, body["errors"][0]["message"])
        assert answer.status_code == 200, answer.text
        results = body["results"]
        return results
    if door == "websocket":
        return _websocket(flow, token, on, docs)
    assert door == "grpc"
    request = data_request_pb2.DataRequest(header=data_request_pb2.Header(endpoint=on))
    request.docs.add(id="d1", text="hello")
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
    with grpc.insecure_channel(f"127.0.0.1:{flow.port}") as channel:
        call = channel.unary_unary(GATEWAY_POST)
        try:
            raw = call(request.SerializeToString(), metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            kind = {
                grpc.StatusCode.UNAUTHENTICATED: "UNAUTHENTICATED",
                grpc.StatusCode.PERMISSION_DENIED: "FORBIDDEN",
            }[exc.code()]
            raise Refused(kind, exc.details() or "") from None
    answer_pb = data_request_pb2.DataRequest.FromString(raw)
    assert answer_pb.status.code == data_request_pb2.Status.OK, answer_pb.status
    from meshflow.document.proto import struct_to_dict

    return {k: struct_to_dict(v) for k, v in answer_pb.results.items()}


def _websocket(
    flow: Flow, token: str | None, on: str, docs: list[dict[str, Any]]
) -> dict[str, Any]:
    url = flow.graphql_url.replace("http://", "ws://")
    payload = {"authorization": f"Bearer {token}"} if token is not None else {}
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=10) as ws:
        try:
            ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            variables = {"on": on, "batches": [docs]}
            ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": STREAM, "variables": variables},
                    }
                )
            )
            results: dict[str, Any] = {}
            while True:
                message = json.loads(ws.recv(timeout=10))
                kind = message["type"]
                errors = message["payload"] if kind == "error" else None
                if kind == "next":
                    errors = message["payload"].get("errors")
                    if not errors:
                        results = message["payload"]["data"]["stream"]["results"]
                if errors:
                    assert errors[0]["extensions"]["code"] == "FORBIDDEN", message
                    ws.recv(timeout=10)  # the close that follows
                    raise AssertionError("the socket stayed open after a refusal")
                if kind == "complete":
                    return results
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            kind = {4401: "UNAUTHENTICATED", 4403: "FORBIDDEN"}[exc.rcvd.code]
            raise Refused(kind, exc.rcvd.reason) from None


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("case", REFUSED)
def test_bad_tokens_are_refused_before_any_executor(
    secured: Flow, keys: Keys, door: str, case: str
) -> None:
    token = refused_tokens(keys)[case]
    before = calls(secured)
    with pytest.raises(Refused) as refused:
        send(secured, door, token)
    assert refused.value.kind == "UNAUTHENTICATED"
    assert calls(secured) == before


@pytest.mark.parametrize("door", DOORS)
def test_a_missing_scope_is_forbidden(secured: Flow, keys: Keys, door: str) -> None:
    before = calls(secured)
    with pytest.raises(Refused) as refused:
        send(secured, door, keys.token(scope="search:read"), on="/index")
    assert refused.value.kind == "FORBIDDEN"
    assert "index:write" in refused.value.detail
    with pytest.raises(Refused) as refused:  # an endpoint not listed needs default_scope
        send(secured, door, keys.token(), on="/other")
    assert refused.value.kind == "FORBIDDEN"
    assert calls(secured) == before


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("key", ["k1", "k2"])
def test_valid_tokens_pass_and_executors_see_the_identity(
    secured: Flow, keys: Keys, door: str, key: str
) -> None:
    token = keys.token(key, scope="index:write search:read", sub="carol", tenant="acme")
    before = calls(secured)
    results = send(secured, door, token, on="/index")
    for name in ("first", "second"):  # the identity survives every hop
        seen = results[name]
        assert seen["subject"] == "carol"
        assert seen["scopes"] == ["index:write", "search:read"]
        assert seen["tenant"] == "acme"
        assert seen["issuer"] == ISSUER
    assert token not in json.dumps(results)
    assert calls(secured) == (before[0] + 1, before[1] + 1)


def test_a_client_cannot_forge_its_identity(secured: Flow, keys: Keys) -> None:
    request = data_request_pb2.DataRequest(header=data_request_pb2.Header(endpoint="/search"))
    # A voucher the client made up (with its own key) is dropped by the gateway.
    from meshflow.identity import Identity
    from meshflow.voucher import Signer

    forged = Signer.generate().sign("", Identity("root", frozenset({"everything"})))
    request.header.voucher.CopyFrom(forged)
    request.docs.add(id="d1")
    token = keys.token(scope="search:read", sub="dave")
    with grpc.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        raw = channel.unary_unary(GATEWAY_POST)(
            request.SerializeToString(), metadata=(("authorization", f"Bearer {token}"),)
        )
    answer = data_request_pb2.DataRequest.FromString(raw)
    assert answer.results["first"]["subject"] == "dave"
    assert list(answer.results["first"]["scopes"]) == ["search:read"]


def test_flow_query_needs_the_admin_scope(secured: Flow, keys: Keys) -> None:
    query = {"query": "{ flow { healthy deployments { name } } }"}

    def ask(token: str) -> dict[str, Any]:
        answer = httpx.post(
            secured.graphql_url,
            json=query,
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )
        body: dict[str, Any] = answer.json()
        return body

    refused = ask(keys.token(scope="search:read index:write"))
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "meshflow:admin" in refused["errors"][0]["message"]
    allowed = ask(keys.token(scope="meshflow:admin"))
    assert allowed["data"]["flow"]["healthy"] is True


def test_health_needs_no_token(secured: Flow) -> None:
    base = secured.graphql_url.removesuffix("/graphql")
    assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "SERVING"}
    assert httpx.get(f"{base}/", timeout=10).status_code == 200
    # /metrics is not behind the token either (404 here: this Flow has metrics off)
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 404
    ping = subprocess.run(
        [sys.executable, "-m", "meshflow.cli", "ping", f"127.0.0.1:{secured.port}"],
        capture_output=True,
        timeout=30,
    )
    assert ping.returncode == 0, ping.stderr


def test_client_sends_its_token_on_every_protocol(secured: Flow, keys: Keys) -> None:
    docs = DocumentArray([Document(id=f"d{i}", text="x") for i in range(3)])
    good = keys.token(scope="index:write search:read", sub="erin")
    for protocol in ("grpc", "graphql"):
        with Client(port=_port(secured, protocol), protocol=protocol, token=good) as client:
            one = client.send("/search", docs[:1])
            assert one[0].results["first"]["subject"] == "erin"
            many = client.send("/search", docs, request_size=1)  # a stream / a subscription
            assert [r.results["second"]["subject"] for r in many] == ["erin"] * 3
        with Client(port=_port(secured, protocol), protocol=protocol) as client:
            with pytest.raises(UnauthenticatedError, match="no token"):
                client.post("/search", docs[:1])
            with pytest.raises(UnauthenticatedError, match="no token"):
                client.post("/search", docs, request_size=1)
        bad = keys.token(scope="search:read")
        with Client(port=_port(secured, protocol), protocol=protocol, token=bad) as client:
            with pytest.raises(ForbiddenError, match="index:write"):
                client.post("/index", docs[:1])
            with pytest.raises(ForbiddenError, match="index:write"):
                client.post("/index", docs, request_size=1)


def test_async_client_sends_its_token(secured: Flow, keys: Keys) -> None:
    async def main() -> None:
        token = keys.token(scope="search:read", sub="grace")
        async with AsyncClient(port=_port(secured, "grpc"), token=token) as client:
            answer = await client.post_one("/search", [Document(text="x")])
            assert answer.results["first"]["subject"] == "grace"
            streamed = [r async for r in client.stream("/search", [Document()] * 2, request_size=1)]
            assert [r.results["second"]["subject"] for r in streamed] == ["grace"] * 2
        async with AsyncClient(port=_port(secured, "grpc")) as client:
            with pytest.raises(UnauthenticatedError):
                await client.post_one("/search", [Document(text="x")])

    asyncio.run(main())


def _port(flow: Flow, protocol: str) -> int:
    port = flow.port if protocol == "grpc" else flow.graphql_port
    assert port is not None
    return port


def test_refusals_log_one_line_without_the_token(secured: Flow, keys: Keys) -> None:
    token = keys.token(aud="other", sub="mallory-log")
    with pytest.raises(Refused):
        send(secured, "graphql", token)
    log = gateway_log(secured)
    lines = [line for line in log.splitlines() if "mallory-log" in line]
    assert len(lines) == 1
    assert re.search(r"auth refused \(http\): wrong audience; subject 'mallory-log'", lines[0])
    assert token not in log
    assert "Traceback" not in log
    # the port the OS chose (the Flow asked for none), not the ":0" asked for
    assert f"gateway serving on 127.0.0.1:{secured.port} (pid" in log, log[:2000]


def test_a_scope_refusal_is_logged_once_when_its_text_runs_compiled(
    secured: Flow, keys: Keys
) -> None:
    """A ``post`` text the gateway has compiled (it answered it before) and a caller lacking
    the scope of the endpoint it names this time: one log line a refusal (the metrics count
    beside it), not one for the compiled run and one for the generic path."""
    token = keys.token(scope="search:read", sub="erin-compiled")
    send(secured, "graphql", token, on="/search")
    send(secured, "graphql", token, on="/search")  # from here on the text runs compiled
    for _ in range(2):
        with pytest.raises(Refused) as refusal:
            send(secured, "graphql", token, on="/index")
        assert refusal.value.kind == "FORBIDDEN"
    lines = [line for line in gateway_log(secured).splitlines() if "erin-compiled" in line]
    assert len(lines) == 2, lines


def test_the_gateway_keeps_serving_after_a_burst_of_bad_tokens(secured: Flow, keys: Keys) -> None:
    bad = list(refused_tokens(keys).values())
    before = calls(secured)

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            slots = asyncio.Semaphore(64)

            async def one(i: int) -> int:
                token = bad[i % len(bad)] or "garbage"
                if i % 2:
                    token = f"{token[:-4]}AAAA"  # broken signatures, a fresh string each time
                async with slots:
                    answer = await client.post(
                        secured.graphql_url,
                        json={"query": POST, "variables": {"on": "/index", "docs": []}},
                        headers={"authorization": f"Bearer {token}"},
                    )
                return answer.status_code

            return await asyncio.gather(*(one(i) for i in range(1000)))

    statuses = asyncio.run(burst())
    assert statuses == [401] * 1000
    assert calls(secured) == before
    good = keys.token(scope="search:read")
    assert send(secured, "graphql", good, on="/search")["first"]["subject"] == "alice"
    assert send(secured, "grpc", good, on="/search")["second"]["subject"] == "alice"


@pytest.mark.mesh("envoy")
def test_auth_under_the_envoy_mesh(
    start_flow: Callable[[Flow], Flow], keys: Keys, tmp_path: object
) -> None:
    paths = keys.write(str(tmp_path))
    auth = JWTAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=paths["jwks"], scopes=SCOPES)
    f = start_flow(Flow(auth=auth).add(uses="executors:Guarded", name="first", replicas=2))
    with pytest.raises(Refused):
        send(f, "grpc", refused_tokens(keys)["expired"])
    assert send(f, "grpc", keys.token(sub="frank"))["first"]["subject"] == "frank"
    assert send(f, "graphql", keys.token(sub="frank"))["first"]["subject"] == "frank"


def test_a_missing_scope_is_named_over_grpc_as_over_graphql(secured: Flow, keys: Keys) -> None:
    token = keys.token(scope="search:read")
    with Client(port=secured.port, token=token) as client:
        with pytest.raises(ForbiddenError) as refused:  # one unary Post
            client.post("/index", DocumentArray.empty(1))
        assert refused.value.scope == "index:write"
        with pytest.raises(ForbiddenError) as refused:  # requests on a Stream
            client.post("/index", DocumentArray.empty(2), request_size=1)
        assert refused.value.scope == "index:write"

    async def post_one() -> None:
        async with AsyncClient(port=secured.port, token=token) as client:
            with pytest.raises(ForbiddenError) as refused:
                await client.post_one("/index", DocumentArray.empty(1), timeout=10)
            assert refused.value.scope == "index:write"

    asyncio.run(post_one())
