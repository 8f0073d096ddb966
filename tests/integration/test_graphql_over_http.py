"""The GraphQL door against the GraphQL-over-HTTP specification's own checks, run by Node:
``auditServer`` of the ``graphql-http`` package (every MUST and SHOULD must pass) and a real
subscription through the ``graphql-ws`` client. The packages, pinned in
``tests/integration/node/package.json``, are installed with npm into a temporary folder once
per session; without Node or npm the tests are skipped (they fail where
MESHFLOW_REQUIRE_SYSTEM_TOOLS is set, as in CI, and so does a failed npm install)."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from authkeys import AUDIENCE, ISSUER, Keys
from systemtools import NodeProject, node_project, required

from meshflow import Flow, JWTAuth

StartFlow = Callable[[Flow], Flow]

pytestmark = pytest.mark.timeout(300)  # the first test also waits for npm install

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")
LEVELS = ("MUST", "SHOULD", "MAY")


@pytest.fixture(scope="session")
def node() -> Iterator[NodeProject]:
    with node_project(SCRIPTS, "graphql-http and graphql-ws", 240) as project:
        # What makes Node's own WebSocket global: a flag on Node 20, nothing from Node 22.
        probe = [project.node, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"]
        if subprocess.run(probe, timeout=30).returncode == 0:
            yield project
            return
        flags = ("--experimental-websocket",)  # Node 20
        if subprocess.run([project.node, *flags, *probe[1:]], timeout=30).returncode != 0:
            required("this Node has no WebSocket of its own (Node 20.10 or later has)")
        yield dataclasses.replace(project, flags=flags)


def _run(node: NodeProject, script: str, *args: str, token: str | None = None) -> str:
    return node.run(script, *args, env={"MESHFLOW_TOKEN": token or ""})


def audit(node: NodeProject, url: str, token: str | None = None) -> dict[str, tuple[int, int]]:
    """Run ``auditServer`` against ``url``; fail on any MUST or SHOULD that is not ok.
    Returns ``{level: (ok, total)}``."""
    report: list[dict[str, Any]] = json.loads(_run(node, "audit.mjs", url, token=token))
    counts: dict[str, collections.Counter[str]] = {level: collections.Counter() for level in LEVELS}
    for item in report:
        counts[item["name"].split()[0]][item["status"]] += 1
    summary = {level: (c["ok"], sum(c.values())) for level, c in counts.items()}
    print(
        "GraphQL-over-HTTP audit of",
        url,
        ", ".join(f"{level} {ok}/{total}" for level, (ok, total) in summary.items()),
    )
    failing = [
        f"{item['id']} {item['name']}: {item.get('reason')}; answered {item.get('response')}"
        for item in report
        if item["status"] != "ok" and not item["name"].startswith("MAY")
    ]
    assert not failing, "the GraphQL-over-HTTP audit failed:\n" + "\n".join(failing)
    assert summary["MUST"][1] >= 13 and summary["SHOULD"][1] >= 23, summary
    return summary


def test_the_graphql_over_http_audit_passes_every_must_and_should(
    node: NodeProject, start_flow: StartFlow
) -> None:
    flow = start_flow(Flow().add(uses="executors:Append"))
    assert flow.graphql_url is not None
    summary = audit(node, flow.graphql_url)
    assert summary["MAY"][0] >= 25  # as before content negotiation, or better


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys.generate()


@pytest.fixture(scope="module")
def secured(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    """A Flow whose gateway checks RS256 tokens from a JWKS; "/" needs ``default:use``."""
    folder = str(tmp_path_factory.mktemp("gqlhttp-auth"))
    paths = keys.write(folder)
    flow = Flow(
        mesh="direct",
        workspace=os.path.join(folder, "ws"),
        log_dir=os.path.join(folder, "logs"),
        auth=JWTAuth(
            issuer=ISSUER,
            audience=AUDIENCE,
            jwks_file=paths["jwks"],
            default_scope="default:use",
        ),
    )
    flow.add(uses="executors:Ordered")
    flow.token = keys.token(scope="default:use")
    with flow:
        yield flow


def test_the_audit_passes_with_auth_on_and_a_valid_token(
    node: NodeProject, secured: Flow, keys: Keys
) -> None:
    assert secured.graphql_url is not None
    summary = audit(node, secured.graphql_url, token=keys.token(scope="default:use"))
    assert summary["MAY"][0] >= 25


@pytest.mark.parametrize(
    ("accept", "status"), [("application/graphql-response+json", 403), ("application/json", 200)]
)
def test_a_missing_scope_is_403_only_for_graphql_response_json_clients(
    secured: Flow, keys: Keys, accept: str, status: int
) -> None:
    assert secured.graphql_url is not None
    answer = httpx.post(
        secured.graphql_url,
        json={"query": 'mutation { post(on: "/") { requestId } }'},
        headers={"authorization": f"Bearer {keys.token(scope='other')}", "accept": accept},
        timeout=30,
    )
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith(accept)
    body = answer.json()
    assert ("data" in body) is (accept == "application/json")  # refused before execution
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


# -- graphql-ws ---------------------------------------------------------------------------------

STREAM = """
subscription($batches: [[DocumentInput!]!]!) {
  stream(on: "/", batches: $batches) { batch docs { id text } }
}
"""
# Batch 0 waits for "b" (batch 2), which waits for "a" (batch 1): ready in the order 1, 2, 0.
BATCHES = [
    [{"id": "c", "tags": {"after": "b"}}],
    [{"id": "a"}],
    [{"id": "b", "tags": {"after": "a"}}],
]


def subscribe(node: NodeProject, flow: Flow, token: str | None = None) -> list[dict[str, Any]]:
    assert flow.graphql_url is not None
    url = flow.graphql_url.replace("http://", "ws://")
    out = _run(node, "subscribe.mjs", url, STREAM, json.dumps({"batches": BATCHES}), token=token)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _answers(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    nexts = [e["payload"] for e in events if e["event"] == "next"]
    assert all("errors" not in p for p in nexts), nexts
    return [(p["data"]["stream"]["batch"], p["data"]["stream"]["docs"][0]["text"]) for p in nexts]


READY_ORDER = [(1, "served a"), (2, "served b"), (0, "served c")]


def test_a_graphql_ws_subscription_receives_every_answer_in_order_of_readiness(
    node: NodeProject, start_flow: StartFlow
) -> None:
    flow = start_flow(Flow().add(uses="executors:Ordered"))
    events = subscribe(node, flow)
    assert _answers(events) == READY_ORDER
    assert [e["event"] for e in events][-2:] == ["complete", "closed"]
    assert events[-1]["code"] == 1000  # the client closes once it is done


def test_graphql_ws_with_auth_passes_a_valid_token_and_closes_on_a_refused_one(
    node: NodeProject, secured: Flow, keys: Keys
) -> None:
    assert _answers(subscribe(node, secured, token=keys.token(scope="default:use"))) == (
        READY_ORDER
    )
    # A refused token: the socket is closed at connection_init with 4401 (docs/auth.md).
    for token in (None, "not-a-token", keys.token(exp=1), keys.token("k3")):
        events = subscribe(node, secured, token=token)
        assert not [e for e in events if e["event"] == "next"], events
        closed = [e for e in events if e["event"] == "closed"]
        assert [c["code"] for c in closed] == [4401], events
        assert closed[0]["reason"].startswith("Unauthorized: ")
    # A valid token without the scope: the operation's FORBIDDEN error, then 4403.
    events = subscribe(node, secured, token=keys.token(scope="other"))
    [error] = [e for e in events if e["event"] == "error"]
    assert [x["extensions"]["code"] for x in error["error"]["errors"]] == ["FORBIDDEN"]
    assert [e["code"] for e in events if e["event"] == "closed"] == [4403]
