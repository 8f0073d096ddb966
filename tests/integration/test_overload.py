"""Overload on every door of a running Flow: refusals come back as HTTP 503 / 429 with
``Retry-After`` and gRPC ``RESOURCE_EXHAUSTED`` with ``grpc-retry-pushback-ms``, before the
body is read; the Client waits and retries within its deadline; a request that cannot start
before its deadline is refused at once; one token's flood leaves room for another's."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest
from authkeys import AUDIENCE, ISSUER, Keys

from meshflow import (
    AdmissionPolicy,
    Client,
    DocumentArray,
    Flow,
    JWTAuth,
    OverloadedError,
)
from meshflow.client.messages import build_request
from meshflow.wire import GATEWAY_POST, RETRY_PUSHBACK, TIMEOUT_HEADER

StartFlow = Callable[[Flow], Flow]

# One slot and one place in the queue: two slow requests fill the gateway.
FULL = AdmissionPolicy(adaptive=False, max_queue=1, max_queue_wait=30.0)
POST = "mutation($on: String!) { post(on: $on, parameters: {seconds: 0}) { docs { id } } }"


class Hold:
    """Slow requests in background threads that hold the gateway's slot and queue."""

    def __init__(self, flow: Flow, count: int, seconds: float, token: str | None = None):
        self.errors: list[BaseException] = []
        self.done = 0
        self.threads = [
            threading.Thread(target=self._call, args=(flow, seconds, token), daemon=True)
            for _ in range(count)
        ]
        for thread in self.threads:
            thread.start()
            time.sleep(0.2)  # in order: the first runs, the next waits in the queue

    def _call(self, flow: Flow, seconds: float, token: str | None) -> None:
        try:
            with Client(port=flow.port, timeout=30, retries=0, token=token) as client:
                client.post("/sleep", DocumentArray.empty(1), parameters={"seconds": seconds})
            self.done += 1
        except BaseException as exc:  # collected for the assertion of join()
            self.errors.append(exc)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)
        assert self.errors == [] and self.done == len(self.threads)  # nothing accepted lost


def _raw_http(port: int, head: bytes) -> bytes:
    """Send a request head (no body) and return what the server answers to it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_every_door_refuses_overload_with_its_status_and_a_retry_hint(
    start_flow: StartFlow,
) -> None:
    f = start_flow(Flow(max_in_flight=1, admission=FULL).add(uses="executors:Slow"))
    hold = Hold(f, 2, seconds=2.0)

    with (
        grpc.insecure_channel(f"127.0.0.1:{f.port}") as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(GATEWAY_POST)(build_request("/sleep", [])[1], timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(info.value.trailing_metadata() or ())
    assert int(trailers[RETRY_PUSHBACK]) >= 50

    answer = httpx.post(f.graphql_url, json={"query": POST, "variables": {"on": "/sleep"}})
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"
    assert "data" not in answer.json()

    rest = httpx.post(
        f.graphql_url.replace("/graphql", "/post"), json={"on": "/sleep", "docs": [{}]}
    )
    assert rest.status_code == 503 and int(rest.headers["retry-after"]) >= 1

    # Refused before the body is read: 10 MB announced, none sent, the answer comes anyway.
    assert f.graphql_port is not None
    head = _raw_http(
        f.graphql_port,
        b"POST /graphql HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 10000000\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 503") and b"retry-after:" in head.lower()

    hold.join()
    assert len(f.post("/sleep", DocumentArray.empty(1), parameters={"seconds": 0})) == 1


def _refusals(flow: Flow) -> float:
    """The gateway's count of overload refusals, from its /metrics."""
    text = httpx.get(flow.graphql_url.replace("/graphql", "/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("meshflow_gateway_requests_total") and 'status="overloaded"' in line
    )


@pytest.mark.parametrize("protocol", ["grpc", "graphql"])
def test_the_client_backs_off_and_retries_within_its_deadline(
    start_flow: StartFlow, protocol: str
) -> None:
    f = start_flow(Flow(max_in_flight=1, metrics=True, admission=FULL).add(uses="executors:Slow"))
    port = f.port if protocol == "grpc" else f.graphql_port
    hold = Hold(f, 2, seconds=1.0)
    with Client(port=port, protocol=protocol, timeout=20, retries=4) as client:
        docs = client.post("/sleep", DocumentArray.empty(1), parameters={"seconds": 0})
    assert len(docs) == 1  # refused first (below), then served once the gateway had room
    assert _refusals(f) >= 1
    hold.join()

    # A deadline shorter than the wait the gateway asks for: no retry, the refusal at once.
    hold = Hold(f, 2, seconds=2.0)
    with (
        Client(port=port, protocol=protocol, timeout=0.5, retries=4) as client,
        pytest.raises(OverloadedError),
    ):
        client.post("/sleep", DocumentArray.empty(1), parameters={"seconds": 0})
    hold.join()


def test_a_request_that_cannot_start_before_its_deadline_is_refused_at_once(
    start_flow: StartFlow,
) -> None:
    policy = AdmissionPolicy(adaptive=False, max_queue=64, max_queue_wait=30.0)
    f = start_flow(Flow(max_in_flight=1, admission=policy).add(uses="executors:Slow"))
    hold = Hold(f, 1, seconds=2.0)
    answer = httpx.post(
        f.graphql_url,
        json={"query": POST, "variables": {"on": "/sleep"}},
        headers={TIMEOUT_HEADER: "100"},
        timeout=10,
    )
    assert answer.status_code == 503
    assert answer.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"
    assert "deadline" in answer.json()["errors"][0]["message"]
    # Without a deadline, the same request waits for its turn and is served.
    answer = httpx.post(
        f.graphql_url, json={"query": POST, "variables": {"on": "/sleep"}}, timeout=10
    )
    assert answer.status_code == 200 and "errors" not in answer.json()
    assert answer.json()["data"]["post"] == {"docs": []}
    hold.join()


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys.generate()


@pytest.fixture
def shared(keys: Keys, tmp_path: Any, mesh: str) -> Iterator[Flow]:
    """One slot, four places in the queue, each token subject at most two of them."""
    paths = keys.write(str(tmp_path))
    flow = Flow(
        mesh=mesh,
        workspace=os.path.join(str(tmp_path), "ws"),
        max_in_flight=1,
        admission=AdmissionPolicy(
            adaptive=False, max_queue=4, caller_share=0.5, max_queue_wait=30.0
        ),
        auth=JWTAuth(
            issuer=ISSUER, audience=AUDIENCE, jwks_file=paths["jwks"], default_scope="use"
        ),
    ).add(uses="executors:Slow")
    flow.token = keys.token(scope="use", sub="ops")
    with flow:
        yield flow


@pytest.mark.mesh("direct")
def test_one_tokens_flood_leaves_room_for_another_token(shared: Flow, keys: Keys) -> None:
    flood = keys.token(scope="use", sub="flood")
    steady = keys.token(scope="use", sub="steady")
    hold = Hold(shared, 3, seconds=1.0, token=flood)  # one runs, two wait: its share
    headers = {"authorization": f"Bearer {flood}"}
    answer = httpx.post(
        shared.graphql_url, json={"query": POST, "variables": {"on": "/sleep"}}, headers=headers
    )
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
    assert answer.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
    # The other token still finds room, and goes before the flood's waiting requests.
    started = time.monotonic()
    with Client(port=shared.port, token=steady, timeout=20, retries=0) as client:
        assert len(client.post("/sleep", DocumentArray.empty(1), parameters={"seconds": 0}))
    waited = time.monotonic() - started
    hold.join()
    assert waited < 2.0, "served after the first flood request, not after all three"


@pytest.mark.mesh("direct")
def test_a_flood_next_to_a_steady_caller_is_paced_and_the_steady_caller_never_refused(
    keys: Keys, tmp_path: Any
) -> None:
    """With ``fair_utilization`` at its floor any flood counts as too busy: the token sending
    far more than an equal share gets a rate and 429s past it; the steady one goes through."""
    paths = keys.write(str(tmp_path))
    flow = Flow(
        mesh="direct",
        workspace=os.path.join(str(tmp_path), "ws"),
        # A fixed limit (no adaptive probe of 4 slots at start): only pacing refuses here.
        admission=AdmissionPolicy(adaptive=False, fair_utilization=0.05),
        auth=JWTAuth(
            issuer=ISSUER, audience=AUDIENCE, jwks_file=paths["jwks"], default_scope="use"
        ),
    ).add(uses="executors:Append")
    flood = keys.token(scope="use", sub="flood")
    steady = keys.token(scope="use", sub="steady")
    body = {"query": POST.replace("parameters: {seconds: 0}", ""), "variables": {"on": "/"}}
    refusals: list[httpx.Response] = []
    answered = {"flood": 0, "steady": 0}
    steady_failures: list[Any] = []
    stop = threading.Event()

    def flooder() -> None:
        headers = {"authorization": f"Bearer {flood}"}
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                answer = http.post(flow.graphql_url, json=body, headers=headers)
                if answer.status_code == 200:
                    answered["flood"] += 1
                else:
                    refusals.append(answer)

    with flow:
        threads = [threading.Thread(target=flooder, daemon=True) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            headers = {"authorization": f"Bearer {steady}"}
            with httpx.Client(timeout=10) as http:
                deadline = time.monotonic() + 4.0
                while time.monotonic() < deadline:
                    answer = http.post(flow.graphql_url, json=body, headers=headers)
                    if answer.status_code == 200 and "errors" not in answer.json():
                        answered["steady"] += 1
                    else:
                        steady_failures.append((answer.status_code, answer.text[:200]))
                    time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(15)
    assert steady_failures == [], answered
    assert answered["steady"] >= 5, answered
    assert refusals, f"the flood was never paced ({answered['flood']} answered)"
    for answer in refusals:
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
        assert answer.json()["errors"][0]["extensions"]["code"] == "TOO_MANY_REQUESTS"
    assert answered["flood"] > 0
