"""The attacks of issue 14 against a running Flow's doors, each answered with its code while
the gateway keeps serving everybody else, and without the memory an attacker asked for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from meshflow import Client, Document, DocumentArray, Flow, GraphQLLimits, JWTAuth, mint_token
from meshflow.proto.v1 import data_request_pb2
from meshflow.wire import GATEWAY_POST

StartFlow = Callable[[Flow], Flow]
SECRET = b"s" * 32
ISSUER, AUDIENCE = "https://id.example", "shop"
POST = """
mutation($on: String!, $docs: [DocumentInput!]) { post(on: $on, docs: $docs) { docs { text } } }
"""


def fragment_bomb(levels: int, width: int = 10) -> str:
    parts = ["fragment F0 on Query { __typename }"]
    for i in range(1, levels + 1):
        spreads = " ".join([f"...F{i - 1}"] * width)
        parts.append(f"fragment F{i} on Query {{ {spreads} }}")
    return f"query {{ ...F{levels} }} " + " ".join(parts)


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def peak_rss(flow: Flow) -> int:
    """The gateway process's peak resident memory so far, in bytes (VmHWM)."""
    pid = flow.describe()["gateway"]["pid"]
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def gateway_log(flow: Flow) -> str:
    assert flow.log_dir is not None
    with open(os.path.join(flow.log_dir, "gateway.log"), encoding="utf-8") as fh:
        return fh.read()


@pytest.fixture
def flow(start_flow: StartFlow, tmp_path: Any) -> Flow:
    web = tmp_path / "web"
    (web / ".git").mkdir(parents=True)
    (web / "index.html").write_text("<h1>shop</h1>")
    (web / ".env").write_text("SECRET=1")
    (web / ".git" / "config").write_text("[core]")
    return start_flow(
        Flow(log_dir=str(tmp_path / "logs"), static={"/ui": str(web)}).add(uses="executors:Append")
    )


def gql(flow: Flow, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(flow.graphql_url, json={"query": query, "variables": variables})
    body: dict[str, Any] = response.json()
    return body


# -- query cost --------------------------------------------------------------------------------


@pytest.mark.mesh("direct")
def test_fragment_bombs_are_refused_while_normal_requests_flow(flow: Flow) -> None:
    stop = threading.Event()
    refusals: list[list[str]] = []

    def attack() -> None:
        # From an address of its own: the gateway slows down the address it keeps refusing.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as client:
            while not stop.is_set():
                for levels in (7, 8, 9):
                    body = client.post(flow.graphql_url, json={"query": fragment_bomb(levels)})
                    refusals.append(codes(body.json()))

    attackers = [threading.Thread(target=attack) for _ in range(2)]
    for thread in attackers:
        thread.start()
    try:
        with Client(port=flow.port, timeout=5) as client:
            for i in range(50):
                assert client.post("/", DocumentArray([Document(text=str(i))])).texts == [f"{i}x"]
        answers = [gql(flow, POST, on="/", docs=[{"text": "a"}]) for _ in range(20)]
    finally:
        stop.set()
        for thread in attackers:
            thread.join(timeout=30)
    assert all(a["data"]["post"]["docs"][0]["text"] == "ax" for a in answers)
    assert ["FIELD_LIMIT_EXCEEDED"] in refusals
    assert all(r in (["FIELD_LIMIT_EXCEEDED"], ["TOO_MANY_REFUSALS"]) for r in refusals)
    log = gateway_log(flow)
    assert "Traceback" not in log and "ERROR" not in log


@pytest.mark.mesh("direct")
def test_a_huge_comment_is_refused_before_parsing(flow: Flow) -> None:
    body = gql(flow, "{ __typename } #" + "x" * (2 << 20))
    assert codes(body) == ["QUERY_TOO_LARGE"]


@pytest.mark.mesh("direct")
def test_a_client_refused_again_and_again_waits_its_turn_and_others_do_not(
    start_flow: StartFlow, tmp_path: Any
) -> None:
    limits = GraphQLLimits(refusals_per_second=1, refusal_burst=2)
    flow = start_flow(
        Flow(log_dir=str(tmp_path / "logs"), graphql_limits=limits).add(uses="executors:Append")
    )
    bomb = {"query": fragment_bomb(7)}
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as bomber:
        for _ in range(3):  # the burst, then one more
            assert codes(bomber.post(flow.graphql_url, json=bomb).json()) == [
                "FIELD_LIMIT_EXCEEDED"
            ]

    async def flood() -> list[httpx.Response]:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            # A forwarded-for header of its choosing does not make it another client.
            forged = [{"x-forwarded-for": f"10.0.0.{i}"} for i in range(12)]
            return await asyncio.gather(
                *(client.post(flow.graphql_url, json=bomb, headers=h) for h in forged)
            )

    flooding = asyncio.run(flood())
    # Each waits its turn, one a second, and past 5 s of waiting is told when to come back.
    held = [r for r in flooding if r.status_code == 429]
    assert held and all(r.headers["retry-after"] == "5" for r in held)
    assert all(codes(r.json()) == ["TOO_MANY_REFUSALS"] for r in held)
    served = [r for r in flooding if r.status_code == 200]
    assert served and all(codes(r.json()) == ["FIELD_LIMIT_EXCEEDED"] for r in served)
    # Meanwhile, and after, another address is served at once.
    assert gql(flow, POST, on="/", docs=[{"text": "a"}])["data"]["post"]["docs"] == [{"text": "ax"}]
    # The WebSocket door counts the operations of an address the same way.
    url = flow.graphql_url.replace("http://", "ws://")
    sock = socket.socket()
    sock.bind(("127.0.0.3", 0))
    sock.connect(("127.0.0.1", flow.graphql_port))
    with connect(url, sock=sock, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "p", "type": "subscribe", "payload": {"query": "{"}}))
        parse_error = json.loads(ws.recv(timeout=10))
        assert parse_error["payload"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
        for i in range(12):
            payload = {"query": "subscription { nothing }"}
            ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": payload}))
        found = [json.loads(ws.recv(timeout=15)) for _ in range(12)]
    assert all(m["type"] == "error" for m in found)
    answered = [m["payload"][0]["extensions"]["code"] for m in found]
    assert "GRAPHQL_VALIDATION_FAILED" in answered and "TOO_MANY_REFUSALS" in answered


# -- memory: arrays, documents, batches -------------------------------------------------------

ONE_MIB = 1 << 20


def hostile_bodies() -> dict[str, dict[str, Any]]:
    """Requests of about 1 MiB each, built to make the gateway allocate."""
    many = ONE_MIB // 3 - 100
    return {
        "sub-array dtype": {
            "query": POST,
            "variables": {
                "on": "/",
                "docs": [{"tensor": {"data": [1], "dtype": "(4000,4000)f8"}}] * 100,
            },
        },
        "declared shape": {
            "query": POST,
            "variables": {
                "on": "/",
                "docs": [{"tensor": {"data": [1], "shape": [100000, 100000]}}] * 100,
            },
        },
        "empty documents": {"query": POST, "variables": {"on": "/", "docs": [{}] * many}},
        "empty batches": {
            "query": "subscription($b: [[DocumentInput!]!]!) "
            '{ stream(on: "/", batches: $b) { batch } }',
            "variables": {"b": [[]] * many},
        },
        "wide parameters": {
            "query": 'mutation($p: JSON) { post(on: "/", parameters: $p) { requestId } }',
            "variables": {"p": {"n": [0] * (ONE_MIB // 2 - 100)}},
        },
        "deep variables": {
            "query": 'mutation($p: JSON) { post(on: "/", parameters: $p) { requestId } }',
            "variables": {"p": json.loads("[" * 900 + "]" * 900)},
        },
    }


@pytest.mark.mesh("direct")
def test_no_request_of_1_mib_makes_the_gateway_allocate_64_mib(flow: Flow) -> None:
    with httpx.Client(timeout=30) as client:
        for _ in range(3):  # warm up: imports and caches of every path
            assert client.post(flow.graphql_url, json={"query": "{ __typename }"}).status_code
            gql(flow, POST, on="/", docs=[{"tensor": {"data": [1, 2], "shape": [2]}}])
        before = peak_rss(flow)
        answers = {}
        for name, payload in hostile_bodies().items():
            raw = json.dumps(payload, separators=(",", ":")).encode()
            assert len(raw) <= ONE_MIB + 1024, (name, len(raw))
            answers[name] = client.post(
                flow.graphql_url, content=raw, headers={"content-type": "application/json"}
            )
        grown = peak_rss(flow) - before
    assert grown < 64 * ONE_MIB, f"the gateway grew by {grown / ONE_MIB:.0f} MiB"
    assert codes(answers["sub-array dtype"].json()) == ["BAD_USER_INPUT"]
    assert codes(answers["declared shape"].json()) == ["BAD_USER_INPUT"]
    assert codes(answers["empty documents"].json()) == ["TOO_MANY_DOCUMENTS"]
    assert answers["empty batches"].status_code in (200, 400)  # no subscription over POST
    assert codes(answers["wide parameters"].json()) == []  # large, but within every bound
    assert codes(answers["deep variables"].json()) == ["BAD_USER_INPUT"]
    assert gql(flow, POST, on="/", docs=[{"text": "still"}])["data"]["post"]["docs"] == [
        {"text": "stillx"}
    ]


@pytest.mark.mesh("direct")
@pytest.mark.parametrize(("batches", "bound_mib"), [(ONE_MIB // 3 - 200, 64), (1_000_000, 128)])
def test_a_stream_of_a_million_batches_is_refused(flow: Flow, batches: int, bound_mib: int) -> None:
    """1 MiB of empty batches stays under 64 MiB; a million (3 MB) under 128 MiB, where
    decoding the JSON itself costs ~30 bytes per byte (it took 2 GB before)."""
    url = flow.graphql_url.replace("http://", "ws://")
    query = 'subscription($b: [[DocumentInput!]!]!) { stream(on: "/", batches: $b) { batch } }'
    before = peak_rss(flow)
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        payload = {"query": query, "variables": {"b": [[]] * batches}}
        ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": payload}, separators=(",", ":"))
        )
        message = json.loads(ws.recv(timeout=30))
    grown = peak_rss(flow) - before
    assert grown < bound_mib * ONE_MIB, f"the gateway grew by {grown / ONE_MIB:.0f} MiB"
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["TOO_MANY_BATCHES"]
    assert gql(flow, POST, on="/", docs=[{"text": "a"}])["data"]["post"]["docs"] == [{"text": "ax"}]


@pytest.mark.mesh("direct")
def test_a_variable_used_many_times_is_refused_before_it_is_copied(flow: Flow) -> None:
    """One 10,000-value variable used 300 times: a 25 kB request that would build 3 million
    values (the gateway grew by 1.8 GB). Used twice it is served."""
    values = [0.5] * 10_000

    def query(uses: int) -> str:
        docs = ", ".join(["{embedding: $e}"] * uses)
        return (
            f'mutation($e: NdArrayInput) {{ post(on: "/", docs: [{docs}]) {{ docs {{ text }} }} }}'
        )

    default = "t" * 60_000  # a default is copied for each use as a variable's value is
    text = ", ".join(["{text: $t}"] * 300)
    by_default = gql(
        flow,
        f'mutation($t: String = "{default}") {{ post(on: "/", docs: [{text}]) {{ requestId }} }}',
    )
    assert codes(by_default) == ["BAD_USER_INPUT"], by_default
    before = peak_rss(flow)
    refused = gql(flow, query(300), e={"data": values})
    assert (
        codes(refused) == ["BAD_USER_INPUT"] and "used 300 times" in refused["errors"][0]["message"]
    )
    assert peak_rss(flow) - before < 64 * ONE_MIB
    served = gql(flow, query(2), e={"data": [0.5] * 100})
    assert served["data"]["post"]["docs"] == [{"text": "x"}, {"text": "x"}]


@pytest.mark.mesh("direct")
def test_an_array_selected_15_times_costs_the_gateway_what_once_does(flow: Flow) -> None:
    """A 1 MiB request whose half-million values come back under 15 aliases: the values are
    read once for all of them, and the answer is refused past max_answer_bytes (16 MiB, 8
    bytes a value: the fourth selection). It grew the gateway by 290 MiB more than one
    selection did."""
    values = [1] * (ONE_MIB // 2 - 500)

    def selecting(times: int) -> dict[str, Any]:
        picks = " ".join(f"a{i}: docs {{ embedding {{ data }} }}" for i in range(times))
        query = f'mutation($docs: [DocumentInput!]) {{ post(on: "/", docs: $docs) {{ {picks} }} }}'
        return {"query": query, "variables": {"docs": [{"embedding": {"data": values}}]}}

    with httpx.Client(timeout=60) as client:
        once = client.post(flow.graphql_url, json=selecting(1)).json()
        assert len(once["data"]["post"]["a0"][0]["embedding"]["data"]) == len(values)
        after_once = peak_rss(flow)
        many = client.post(flow.graphql_url, json=selecting(15)).json()
    assert set(codes(many)) == {"ANSWER_TOO_LARGE"}  # each selection past the bound
    grown = peak_rss(flow) - after_once
    assert grown < 32 * ONE_MIB, f"15 selections grew the gateway by {grown / ONE_MIB:.0f} MiB"


@pytest.mark.mesh("direct")
def test_an_answer_selecting_one_array_many_times_is_bounded(
    start_flow: StartFlow, tmp_path: Any
) -> None:
    """Each alias of a field writes all of it: past max_answer_bytes the field is refused
    (ANSWER_TOO_LARGE), the first time (generic path) as once the text is compiled; arrays,
    tags and text alike."""
    limits = GraphQLLimits(max_answer_bytes=8000)
    flow = start_flow(
        Flow(log_dir=str(tmp_path / "logs"), graphql_limits=limits).add(uses="executors:Append")
    )
    doc = {"text": "a", "embedding": {"data": [0.5] * 600}}

    def selecting(times: int) -> str:
        picks = " ".join(f"a{i}: docs {{ embedding {{ data }} }}" for i in range(times))
        return f'mutation($docs: [DocumentInput!]) {{ post(on: "/", docs: $docs) {{ {picks} }} }}'

    for _ in range(3):  # the generic path, then the compiled one
        once = gql(flow, selecting(1), docs=[doc])
        assert once["data"]["post"]["a0"][0]["embedding"]["data"] == [0.5] * 600, once
        twice = gql(flow, selecting(2), docs=[doc])
        assert codes(twice) == ["ANSWER_TOO_LARGE"], twice
    for field, big in (("tags", {"tags": {"a": [0] * 1000}}), ("text", {"text": "t" * 5000})):
        picks = " ".join(f"a{i}: docs {{ {field} }}" for i in range(2))
        query = f'mutation($docs: [DocumentInput!]) {{ post(on: "/", docs: $docs) {{ {picks} }} }}'
        for _ in range(2):
            assert codes(gql(flow, query, docs=[big])) == ["ANSWER_TOO_LARGE"], field
    stream = 'subscription($b: [[DocumentInput!]!]!) { stream(on: "/", batches: $b) { %s } }'
    url = flow.graphql_url.replace("http://", "ws://")
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        for i, times in enumerate((1, 2)):
            picks = " ".join(f"a{j}: docs {{ embedding {{ data }} }}" for j in range(times))
            payload = {"query": stream % picks, "variables": {"b": [[doc], [doc]]}}
            ws.send(json.dumps({"id": str(i), "type": "subscribe", "payload": payload}))
            pushed = []
            while (message := json.loads(ws.recv(timeout=20)))["type"] != "complete":
                pushed.append(message)
            if times == 1:  # each pushed answer has its own bound: two of 600 values pass
                assert [m["type"] for m in pushed] == ["next", "next"], pushed
            else:
                assert codes(pushed[0]["payload"]) == ["ANSWER_TOO_LARGE"], pushed


# -- malformed requests -----------------------------------------------------------------------


@pytest.mark.mesh("direct")
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"query": "{ __typename }", "x": "\xff\xfe"}', 400, "BAD_REQUEST"),
        (b"null", 400, "BAD_REQUEST"),
        (b'"x"', 400, "BAD_REQUEST"),
        (b"[]", 400, "BAD_REQUEST"),
        (b"[" * 5000 + b"]" * 5000, 400, "BAD_REQUEST"),
        (b'{"query": 3}', 400, "BAD_REQUEST"),
        (b'{"query": "{ __typename }", "x": ' + b"9" * 5000 + b"}", 400, "BAD_REQUEST"),
    ],
)
def test_malformed_graphql_bodies_get_a_coded_400(
    flow: Flow, body: bytes, status: int, code: str
) -> None:
    response = httpx.post(
        flow.graphql_url, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert codes(response.json()) == [code]
    assert "Traceback" not in gateway_log(flow)


@pytest.mark.mesh("direct")
@pytest.mark.parametrize(
    "body",
    [
        {"on": "/", "docs": [{"text": "a"}], "targetExecutor": 5},
        {"on": "/", "docs": [{"text": "a"}], "targetExecutor": {}},
        {"on": "/", "docs": [{"text": 5}]},
        {"on": "/", "docs": [{"id": ["x"]}]},
        {"on": "/", "docs": [{"tensor": {"data": [1], "shape": 1}}]},
        {"on": "/", "docs": [{"tensor": {"data": [1], "shape": "1"}}]},
        {"on": "/", "docs": [{"tensor": {"data": [1], "dtype": 4}}]},
        {"on": "/", "docs": [{"tensor": {"data": [1], "shape": [1.0]}}]},
        {"on": "/", "docs": [{"tensor": {"data": [1], "shape": [True]}}]},
        {"on": "/", "docs": [{"tensor": {"data": [1], "shape": [1] * 33}}]},
        {"on": "/", "docs": [{"text": "a"}], "pad": 10**5000},
    ],
    ids=lambda body: json.dumps(body)[:60] if "pad" not in body else "a 5001-digit integer",
)
def test_post_bodies_of_the_wrong_types_get_a_coded_400(flow: Flow, body: dict[str, Any]) -> None:
    url = flow.graphql_url.replace("/graphql", "/post")
    import sys

    sys.set_int_max_str_digits(0)  # to write the body; the gateway keeps Python's limit
    raw = json.dumps(body)
    response = httpx.post(url, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    # a body that is not JSON Python reads, or arguments of the wrong type
    assert codes(response.json()) == ["BAD_REQUEST" if "pad" in body else "BAD_USER_INPUT"]
    assert "Traceback" not in gateway_log(flow)


@pytest.mark.mesh("direct")
def test_a_shape_of_a_hundred_thousand_sizes_is_refused_at_once(flow: Flow) -> None:
    """Sizes multiplied one by one cost the event loop ever larger numbers: 300,000 of
    them took minutes, every door stalled meanwhile. Refused before any multiplication."""
    shape = [2**31 - 1] * 300_000
    doc = {"tensor": {"data": [1], "shape": shape}}
    post = flow.graphql_url.replace("/graphql", "/post")
    with httpx.Client(timeout=20) as client:
        answers = [
            client.post(
                flow.graphql_url, json={"query": POST, "variables": {"on": "/", "docs": [doc]}}
            ),
            client.post(post, json={"on": "/", "docs": [doc]}),
        ]
        assert client.get(flow.graphql_url.replace("/graphql", "/health")).status_code == 200
    graphql, rest = (a.json() for a in answers)
    assert codes(graphql) == codes(rest) == ["BAD_USER_INPUT"]
    for body in (graphql, rest):
        assert len(body["errors"][0]["message"]) < 200  # the shape is not echoed back


@pytest.mark.mesh("direct")
@pytest.mark.parametrize("init", [False, True], ids=["before init", "after init"])
def test_malformed_websocket_messages_close_with_4400_without_a_traceback(
    flow: Flow, init: bool
) -> None:
    url = flow.graphql_url.replace("http://", "ws://")
    frames = [
        "[]",
        '"x"',
        "9" * 5000,
        '{"type": 5}',
        '{"type": "subscribe", "id": {}, "payload": {"query": "{ __typename }"}}',
        '{"type": "subscribe", "id": "1", "payload": "x"}',
        '{"type": "subscribe", "id": "1", "payload": {"query": 5}}',
        '{"type": "subscribe", "id": "1", "payload": {"query": "{ __typename }", "variables": 3}}',
        '{"type": "complete", "id": 7}',
    ]
    for frame in frames:
        with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            if init:
                ws.send(json.dumps({"type": "connection_init"}))
                assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            ws.send(frame)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400, frame
    assert "Traceback" not in gateway_log(flow)
    assert gql(flow, POST, on="/", docs=[{"text": "a"}])["data"]["post"]["docs"] == [{"text": "ax"}]


@pytest.mark.mesh("direct")
def test_an_oversized_chunked_body_gets_413_without_a_traceback(
    start_flow: StartFlow, tmp_path: Any
) -> None:
    limits = {"max_body_bytes": 100_000}
    flow = start_flow(
        Flow(log_dir=str(tmp_path / "logs"), graphql_limits=limits).add(uses="executors:Append")
    )

    def chunks() -> Iterator[bytes]:
        yield b'{"query": "{ __typename }", "pad": "'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"}'

    for url in (flow.graphql_url, flow.graphql_url.replace("/graphql", "/post")):
        response = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert codes(response.json()) == ["REQUEST_TOO_LARGE"]
    assert "Traceback" not in gateway_log(flow)


@pytest.mark.mesh("direct")
def test_post_takes_json_only(flow: Flow) -> None:
    url = flow.graphql_url.replace("/graphql", "/post")
    body = '{"on": "/", "docs": [{"text": "a"}]}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = httpx.post(url, content=body, headers={"content-type": content_type})
        assert response.status_code == 415
        assert codes(response.json()) == ["UNSUPPORTED_MEDIA_TYPE"]
    response = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json()["docs"][0]["text"] == "ax"


@pytest.mark.mesh("direct")
def test_a_malformed_array_over_grpc_is_invalid_argument(flow: Flow) -> None:
    request = data_request_pb2.DataRequest()
    request.header.endpoint = "/"
    doc = request.docs.add(id="d")
    doc.tensor.buffer = b"\0" * 7
    doc.tensor.dtype = "<f4"
    doc.tensor.shape.extend([2])
    with grpc.insecure_channel(f"127.0.0.1:{flow.port}") as channel:
        post = channel.unary_unary(GATEWAY_POST)
        with pytest.raises(grpc.RpcError) as refused:
            post(request.SerializeToString(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot read the tensor of Document 'd'" in (refused.value.details() or "")
    with Client(port=flow.port, timeout=10) as client:
        assert client.post("/", [Document(text="fine")]).texts == ["finex"]


# -- the HTTP door's surface ------------------------------------------------------------------


@pytest.mark.mesh("direct")
def test_static_mounts_refuse_dotfiles_and_hidden_folders(flow: Flow) -> None:
    base = flow.graphql_url.replace("/graphql", "/ui")
    assert httpx.get(f"{base}/").text == "<h1>shop</h1>"
    for path in ("/.env", "/.git/config", "/.git/", "/%2egit/config", "/sub/../.env"):
        assert httpx.get(base + path).status_code == 404, path


@pytest.mark.mesh("direct")
def test_a_request_head_past_the_limit_gets_431(flow: Flow) -> None:
    port = int(flow.graphql_url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 100_000)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431")
    assert httpx.get(flow.graphql_url.replace("/graphql", "/health")).status_code == 200


def read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (the socket's timeout bounds it)."""
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


@pytest.fixture
def strict(start_flow: StartFlow, tmp_path: Any) -> Flow:
    """A Flow of two admission slots, heads and bodies given 1 and 2 s, bodies 100 kB."""
    limits = GraphQLLimits(max_head_seconds=1, max_body_seconds=2, max_body_bytes=100_000)
    flow = Flow(log_dir=str(tmp_path / "logs"), graphql_limits=limits, max_in_flight=2)
    return start_flow(flow.add(uses="executors:Append"))


def door(flow: Flow) -> tuple[str, int]:
    return "127.0.0.1", int(flow.graphql_url.split(":")[2].split("/")[0])


@pytest.mark.mesh("direct")
def test_idle_and_trickling_heads_are_closed_with_408(strict: Flow) -> None:
    with (
        socket.create_connection(door(strict), timeout=15) as idle,
        socket.create_connection(door(strict), timeout=15) as trickling,
    ):
        trickling.sendall(b"POST /graphql HTTP/1.1\r\nhost: x\r\n")
        for _ in range(3):
            time.sleep(0.4)
            with contextlib.suppress(OSError):  # closed by now
                trickling.sendall(b"x-pad: a\r\n")
        for sock in (idle, trickling):
            assert read_all(sock).startswith(b"HTTP/1.1 408"), sock
    # a kept-alive connection's next head is timed from its first byte, not from the last answer
    with socket.create_connection(door(strict), timeout=15) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = b""
            while b"SERVING" not in answer:  # the head and the body may come apart
                answer += sock.recv(4096) or pytest.fail(f"closed after {answer!r}")
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.6)
    assert httpx.get(strict.graphql_url.replace("/graphql", "/health")).status_code == 200
    assert "Traceback" not in gateway_log(strict)


@pytest.mark.mesh("direct")
def test_a_body_the_app_never_reads_does_not_hold_the_connection(strict: Flow) -> None:
    """A GET answered before its declared body came, then one byte of it and silence (any
    byte stopped uvicorn's keep-alive timer): closed once the body's time is up."""
    with socket.create_connection(door(strict), timeout=15) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
        answer = b""
        while b"SERVING" not in answer:
            answer += sock.recv(4096) or pytest.fail(f"closed after {answer!r}")
        sock.sendall(b"x")
        started = time.monotonic()
        assert read_all(sock) == b""  # closed, nothing more said
        assert time.monotonic() - started < 10  # max_body_seconds is 2 here, not the 15 s
    with socket.create_connection(door(strict), timeout=15) as sock:  # a 401 alike: no route
        sock.sendall(b"POST /nope HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nx")
        assert read_all(sock).startswith(b"HTTP/1.1")


@pytest.mark.mesh("direct")
def test_slow_bodies_hold_no_admission_slot_and_get_408(strict: Flow) -> None:
    """Five senders trickling bodies (the gateway has two slots): everybody else is served
    meanwhile, and each trickler gets a 408 once its time is up."""
    slow = []
    try:
        for _ in range(5):
            sock = socket.create_connection(door(strict), timeout=15)
            sock.sendall(
                b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: 100\r\n\r\n{"
            )
            slow.append(sock)
        time.sleep(0.3)
        for _ in range(3):
            answer = gql(strict, POST, on="/", docs=[{"text": "a"}])
            assert answer["data"]["post"]["docs"] == [{"text": "ax"}], answer
        for sock in slow:
            answer = read_all(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"REQUEST_TIMEOUT" in answer
    finally:
        for sock in slow:
            sock.close()
    assert "Traceback" not in gateway_log(strict)


def holding_body(flow: Flow, source: str) -> socket.socket:
    """A connection from ``source`` (any 127.x address is this machine) holding a 95 kB body
    short of its end."""
    sock = socket.create_connection(door(flow), timeout=15, source_address=(source, 0))
    sock.sendall(
        b"POST /post HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 99000\r\n\r\n" + b" " * 95_000
    )
    return sock


@pytest.mark.mesh("direct")
def test_bodies_being_read_hold_at_most_their_share_and_budget(strict: Flow) -> None:
    """Bodies short of their end hold at most 2 x max_body_bytes per caller (its address
    here) and 4 x max_body_bytes in all: past either, 503; once they go, bodies are read
    again."""
    held = []
    try:
        held += [holding_body(strict, "127.0.0.2"), holding_body(strict, "127.0.0.2")]
        time.sleep(0.5)
        with holding_body(strict, "127.0.0.2") as third:  # past its caller's share
            answer = read_all(third)
        assert answer.startswith(b"HTTP/1.1 503") and b"of this caller" in answer, answer[:300]
        held += [holding_body(strict, "127.0.0.3"), holding_body(strict, "127.0.0.4")]
        time.sleep(0.5)
        with holding_body(strict, "127.0.0.5") as fifth:  # past the gateway's budget
            answer = read_all(fifth)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
        assert b"OVERLOADED" in answer and b"retry-after: 1" in answer.lower()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    body = {"on": "/", "docs": [{"text": "b" * 90_000}]}
    response = httpx.post(strict.graphql_url.replace("/graphql", "/post"), json=body, timeout=15)
    assert response.status_code == 200 and response.json()["docs"][0]["text"].endswith("bx")


@pytest.mark.mesh("direct")
def test_a_websocket_that_never_sends_connection_init_is_closed(strict: Flow) -> None:
    url = strict.graphql_url.replace("http://", "ws://")
    with (
        connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408


@pytest.mark.mesh("direct")
def test_cors_is_off_by_default_and_explicit_when_on(start_flow: StartFlow) -> None:
    allowed, other = "http://shop.example", "http://evil.example"
    flow = start_flow(Flow(cors=[allowed]).add(uses="executors:Append"))
    preflight = {"access-control-request-method": "POST"}
    response = httpx.options(flow.graphql_url, headers={"origin": allowed, **preflight})
    assert response.headers["access-control-allow-origin"] == allowed
    response = httpx.options(flow.graphql_url, headers={"origin": other, **preflight})
    assert "access-control-allow-origin" not in response.headers
    url = flow.graphql_url.replace("http://", "ws://")
    protocols = [Subprotocol("graphql-transport-ws")]
    with connect(url, subprotocols=protocols, additional_headers={"origin": allowed}) as ws:
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
    with (
        pytest.raises(InvalidStatus),
        connect(url, subprotocols=protocols, additional_headers={"origin": other}),
    ):
        pass


@pytest.mark.mesh("direct")
def test_without_cors_a_page_on_another_origin_gets_no_access(flow: Flow) -> None:
    headers = {"origin": "http://evil.example", "access-control-request-method": "POST"}
    response = httpx.options(flow.graphql_url, headers=headers)
    assert "access-control-allow-origin" not in response.headers
    url = flow.graphql_url.replace("http://", "ws://")
    with (
        pytest.raises(InvalidStatus),
        connect(
            url,
            subprotocols=[Subprotocol("graphql-transport-ws")],
            additional_headers={"origin": "http://evil.example"},
        ),
    ):
        pass


# -- auth before work -------------------------------------------------------------------------


@pytest.fixture
def secured(start_flow: StartFlow, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Flow:
    monkeypatch.setenv("HOSTILE_SECRET", SECRET.decode())
    auth = JWTAuth(
        secret_env="HOSTILE_SECRET",
        issuer=ISSUER,
        audience=AUDIENCE,
        scopes={"/index": "index:write", "/search": "search:read"},
    )
    return start_flow(
        Flow(log_dir=str(tmp_path / "logs"), auth=auth, max_request_bytes=100 << 20).add(
            uses="executors:Append"
        )
    )


def token(*scopes: str) -> str:
    return mint_token(key=SECRET, subject="reader", issuer=ISSUER, audience=AUDIENCE, scopes=scopes)


@pytest.mark.mesh("direct")
def test_a_reader_refused_index_costs_no_documents(secured: Flow) -> None:
    headers = {"authorization": f"Bearer {token('search:read')}"}
    docs = [{"embedding": {"data": [0.5] * 512, "dtype": "float64"}}] * 1000
    with httpx.Client(timeout=30, headers=headers) as client:
        client.post(secured.graphql_url, json={"query": "{ __typename }"})
        before = peak_rss(secured)
        for _ in range(5):
            body = client.post(
                secured.graphql_url,
                json={"query": POST, "variables": {"on": "/index", "docs": docs}},
            ).json()
            assert codes(body) == ["FORBIDDEN"]
        grown = peak_rss(secured) - before
    assert grown < 64 * ONE_MIB, f"the gateway grew by {grown / ONE_MIB:.0f} MiB"


@pytest.mark.mesh("direct")
def test_unauthenticated_grpc_posts_are_refused_before_their_message_is_read(
    secured: Flow,
) -> None:
    request = data_request_pb2.DataRequest()
    request.header.endpoint = "/search"
    request.docs.add(id="big", blob=b"\0" * (60 << 20))
    data = request.SerializeToString()
    with grpc.insecure_channel(
        f"127.0.0.1:{secured.port}", options=[("grpc.max_send_message_length", 100 << 20)]
    ) as channel:
        post = channel.unary_unary(GATEWAY_POST)
        before = peak_rss(secured)
        for _ in range(10):
            with pytest.raises(grpc.RpcError) as refused:
                post(data, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        grown = peak_rss(secured) - before
        good = (("authorization", f"Bearer {token('search:read')}"),)
        small = data_request_pb2.DataRequest()
        small.header.endpoint = "/search"
        small.docs.add(text="a")
        answer = data_request_pb2.DataRequest.FromString(
            post(small.SerializeToString(), timeout=10, metadata=good)
        )
    assert grown < 64 * ONE_MIB, f"the gateway grew by {grown / ONE_MIB:.0f} MiB"
    assert answer.docs[0].text == "ax"


@pytest.mark.mesh("direct")
def test_an_anonymous_body_is_never_read(secured: Flow) -> None:
    body = json.dumps({"query": "{ __typename }", "pad": "x" * (12 << 20)}).encode()
    with httpx.Client(timeout=30) as client:
        client.post(secured.graphql_url, json={"query": "{ __typename }"})
        before = peak_rss(secured)
        for _ in range(5):
            response = client.post(
                secured.graphql_url, content=body, headers={"content-type": "application/json"}
            )
            assert response.status_code == 401
        grown = peak_rss(secured) - before
    assert grown < 8 * ONE_MIB, f"the gateway grew by {grown / ONE_MIB:.0f} MiB"


@pytest.mark.mesh("direct")
def test_a_huge_bad_token_is_refused_at_the_head_limit(secured: Flow) -> None:
    response = httpx.post(
        secured.graphql_url,
        json={"query": "{ __typename }"},
        headers={"authorization": "Bearer " + "x" * (1 << 20)},
    )
    assert response.status_code == 431


# -- restarts ---------------------------------------------------------------------------------


@pytest.mark.mesh("direct")
def test_a_restarted_gateway_rebinds_with_keep_alive_connections_open(flow: Flow) -> None:
    health = flow.graphql_url.replace("/graphql", "/health")
    keep_alive = httpx.Client(timeout=5)
    try:
        assert keep_alive.get(health).status_code == 200  # a connection stays open
        pid = flow.describe()["gateway"]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("the gateway did not come back within 15 s")
        assert flow.describe()["gateway"]["pid"] != pid
        assert "Address already in use" not in gateway_log(flow)
        with Client(port=flow.port, timeout=10) as client:  # the gRPC door too
            assert client.post("/", [Document(text="back")]).texts == ["backx"]
    finally:
        keep_alive.close()
