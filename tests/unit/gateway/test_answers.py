"""Fast answers (``gateway/answers.py``): Documents completed by projection answer exactly
what graphql-core's generic completion answers, for every kind of selection.

Each query runs twice through the real ASGI app of the HTTP door (Strawberry, graphql-core,
orjson), over a gateway whose executors are scripted: once as shipped, once with the
projection switched off (graphql-core's own ``complete_object_value``); the two answers must
be the same bytes: same keys in the same order, same values, same nulls and same errors.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import get_object_definition

from meshflow.document.proto import dict_to_struct
from meshflow.gateway.answers import AnswerExecutionContext, encode_answer
from meshflow.gateway.graphql import DocumentInput
from meshflow.gateway.http import make_app
from meshflow.gateway.persisted import sha256_hex
from meshflow.gateway.server import Gateway
from meshflow.gateway.testing import Call, ScriptedTransport
from meshflow.gateway.topology import Node, Topology
from meshflow.gateway.traversal import Traversal
from meshflow.proto.v1 import data_request_pb2, document_pb2
from meshflow.spec.limits import GraphQLLimits
from meshflow.spec.persisted import PersistedQueries


def _array(pb: document_pb2.NdArray, values: np.ndarray[Any, Any]) -> None:
    pb.buffer = values.tobytes()
    pb.dtype = values.dtype.str
    pb.shape.extend(values.shape)


def _document(pb: document_pb2.Document, name: str, depth: int = 0) -> None:
    """A Document with every field set, matches and chunks (nested once)."""
    pb.id = name
    pb.parent_id = f"{name}-parent"
    pb.text = f'text of {name}, with é and "quotes"'
    pb.blob = name.encode() + b"\x00\xff"
    pb.uri = f"file:///{name}.png"
    pb.mime_type = "image/png"
    pb.tags.CopyFrom(dict_to_struct({"colour": "red", "price": 9.5, "sizes": [1, 2], "x": {}}))
    pb.scores["cosine"] = 0.25
    pb.scores["bm25"] = 1.5e-05
    _array(pb.embedding, np.arange(4, dtype=np.float32) / 3)
    _array(pb.tensor, np.arange(6, dtype=np.int64).reshape(2, 3))
    if depth < 2:
        for j in range(3):
            _document(pb.matches.add(), f"{name}-m{j}", depth + 1)
        for j in range(2):
            _document(pb.chunks.add(), f"{name}-c{j}", depth + 1)


def _answer(request: data_request_pb2.DataRequest) -> data_request_pb2.DataRequest:
    answer = data_request_pb2.DataRequest()
    answer.header.request_id = "r1"
    _document(answer.docs.add(), "full")
    answer.docs.add(id="bare")  # no embedding, tensor, tags, scores, matches: nulls and {}
    bare_match = answer.docs[1].matches.add(id="bare-m0")
    bare_match.scores["cosine"] = 1.0
    odd = answer.docs.add(id="odd")
    _array(odd.embedding, np.array([np.float32(1e-7), 3.0e38, -0.0], dtype=np.float32))
    _array(odd.tensor, np.zeros(0, dtype=np.float64))
    answer.results["exec0"].CopyFrom(dict_to_struct({"n": 3}))
    return answer


class _Scripted(Gateway):
    """A gateway whose request path ends with ``answer(request)``."""

    def __init__(
        self, answer: Callable[[data_request_pb2.DataRequest], data_request_pb2.DataRequest]
    ) -> None:
        topology = Topology((Node(name="exec0", needs=("gateway",), shards=(("x",),)),))
        super().__init__(Traversal(topology, ScriptedTransport(_unused)))
        self.answer = answer
        self.requests: list[data_request_pb2.DataRequest] = []

    async def _run(self, data: bytes, deadline: float | None, identity: Any, door: str) -> bytes:
        request = data_request_pb2.DataRequest.FromString(data)
        self.requests.append(request)
        return self.answer(request).SerializeToString()


def _unused(call: Call) -> bytes:
    raise AssertionError("the scripted gateway answers without executors")


def run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


async def _post(gateway: Gateway, query: str, variables: dict[str, Any]) -> bytes:
    app = make_app(gateway, GraphQLLimits())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        response = await http.post(
            "/graphql", json={"query": query, "variables": variables}, timeout=20
        )
    assert response.status_code == 200, response.text
    return response.content


def _both(
    monkeypatch: pytest.MonkeyPatch, query: str, variables: dict[str, Any] | None = None
) -> tuple[bytes, bytes, int]:
    """The answer with the projection, the answer without, and how many Documents the
    projected run left to graphql-core's generic completion."""
    generic_documents = 0
    complete = StrawberryGraphQLCoreExecutionContext.complete_object_value

    def counting(self: Any, return_type: Any, *args: Any) -> Any:
        nonlocal generic_documents
        generic_documents += return_type.name == "Document"
        return complete(self, return_type, *args)

    with monkeypatch.context() as patch:
        patch.setattr(StrawberryGraphQLCoreExecutionContext, "complete_object_value", counting)
        fast = run(_post(_Scripted(_answer), query, variables or {}))
    with monkeypatch.context() as patch:
        patch.setattr(AnswerExecutionContext, "complete_object_value", complete)
        generic = run(_post(_Scripted(_answer), query, variables or {}))
    return fast, generic, generic_documents


VARIABLES = "($yes: Boolean = true, $no: Boolean = false)"


def _query(selection: str) -> str:
    """The ``post`` mutation selecting ``selection``, with the variables and fragments it
    uses (validation refuses unused ones)."""
    query = f"mutation Search{VARIABLES if '$' in selection else ''} "
    query += f'{{ post(on: "/s") {{ {selection} }} }}'
    return query + FRAGMENTS if "...Deep" in selection else query


FRAGMENTS = """
fragment Leaf on Document { id scores }
fragment Array on NdArray { shape dtype data }
fragment Deep on Document { ...Leaf embedding { ...Array } matches { ...Leaf chunks { id } } }
"""

SELECTIONS = {
    "ids": "docs { id }",
    "the benchmark's": "docs { id matches { id scores } }",
    "every leaf": "docs { id parentId text blob uri mimeType tags scores }",
    "arrays": "docs { embedding { shape dtype data } tensor { shape dtype data } }",
    "arrays partly": "docs { id embedding { dtype } tensor { shape } }",
    "aliases": (
        "docs { key: id a: text b: text m: matches { k: id s: scores e: embedding { d: data } } }"
    ),
    "same key twice merges": "docs { id matches { id } matches { scores } id }",
    "typename everywhere": (
        "__typename requestId docs { __typename id embedding { __typename data } "
        "matches { __typename t: __typename id } }"
    ),
    "inline fragments": "docs { ... on Document { id matches { ... { scores } } } text }",
    "named fragments": "docs { ...Deep chunks { ...Leaf } }",
    "include and skip": (
        "docs { id @include(if: $yes) text @skip(if: $yes) uri @skip(if: $no) "
        "matches @include(if: $no) { id } chunks @include(if: $yes) { id @skip(if: $yes) tags } "
        "... @skip(if: $yes) { blob } ... @include(if: $yes) { mimeType } }"
    ),
    "nested matches and chunks": (
        "docs { id chunks { id parentId matches { id scores tags embedding { data } } } "
        "matches { chunks { text } matches { id } } }"
    ),
    "empty lists and nulls": (
        "docs { id matches { id matches { id } embedding { data } } tensor { data } }"
    ),
    "results beside docs": "results docs { id } requestId",
}


@pytest.mark.parametrize("selection", list(SELECTIONS), ids=list(SELECTIONS))
def test_a_projected_answer_is_the_generic_answer(
    monkeypatch: pytest.MonkeyPatch, selection: str
) -> None:
    query = _query(SELECTIONS[selection])
    fast, generic, left_to_generic = _both(monkeypatch, query)
    assert fast == generic
    answer = json.loads(fast)
    assert "errors" not in answer, answer
    assert left_to_generic == 0  # every Document was projected, its subtree included
    assert len(answer["data"]["post"].get("docs", [1, 2, 3])) == 3


def test_variables_of_directives_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    query = _query("docs { id @include(if: $yes) text @skip(if: $no) }")
    for yes, no in [(True, False), (False, True), (True, True), (False, False)]:
        fast, generic, _ = _both(monkeypatch, query, {"yes": yes, "no": no})
        assert fast == generic
        keys = set(json.loads(fast)["data"]["post"]["docs"][0])
        assert keys == {name for name, kept in (("id", yes), ("text", not no)) if kept}


def test_a_field_error_inside_a_document_is_the_generic_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shape beyond GraphQL's 32-bit Int fails in completion: the projection leaves that
    Document to the generic path, which answers the error with its path and a null."""

    def answer(request: data_request_pb2.DataRequest) -> data_request_pb2.DataRequest:
        out = _answer(request)
        out.docs[0].matches[1].embedding.shape[:] = [2**40]
        return out

    query = _query("docs { id matches { id embedding { shape } } }")
    fast = run(_post(_Scripted(answer), query, {}))
    with monkeypatch.context() as patch:
        patch.setattr(
            AnswerExecutionContext,
            "complete_object_value",
            StrawberryGraphQLCoreExecutionContext.complete_object_value,
        )
        generic = run(_post(_Scripted(answer), query, {}))
    assert fast == generic
    body = json.loads(fast)
    [error] = body["errors"]
    assert error["path"] == ["post", "docs", 0, "matches", 1, "embedding", "shape", 0]
    assert body["data"]["post"]["docs"][1]["id"] == "bare"


def test_an_executor_error_is_answered_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(request: data_request_pb2.DataRequest) -> data_request_pb2.DataRequest:
        out = _answer(request)
        out.status.code = data_request_pb2.Status.ERROR
        out.status.message = "boom"
        out.status.executor = "exec0"
        return out

    query = _query("docs { id }")
    fast = run(_post(_Scripted(answer), query, {}))
    with monkeypatch.context() as patch:
        patch.setattr(
            AnswerExecutionContext,
            "complete_object_value",
            StrawberryGraphQLCoreExecutionContext.complete_object_value,
        )
        generic = run(_post(_Scripted(answer), query, {}))
    assert fast == generic
    body = json.loads(fast)
    assert body["data"] is None and body["errors"][0]["extensions"]["executor"] == "exec0"


def test_arrays_keep_their_float64_values() -> None:
    """The JSON holds the float64 value of each float32, as ``json.dumps`` wrote it."""
    query = _query("docs { embedding { data } }")
    body = json.loads(run(_post(_Scripted(_answer), query, {})))
    odd = body["data"]["post"]["docs"][2]["embedding"]["data"]
    expected = np.array([1e-7, 3.0e38, -0.0], dtype=np.float32).astype(np.float64).tolist()
    assert odd == expected
    assert json.dumps(odd) == json.dumps(expected)


def test_the_encoder_falls_back_for_what_orjson_refuses() -> None:
    assert encode_answer({"big": 2**70}) == b'{"big":1180591620717411303424}'
    assert encode_answer({1: "a"}) == b'{"1":"a"}'
    assert encode_answer({"x": float("nan")}) == b'{"x":null}'  # json.dumps: NaN, not JSON
    assert json.loads(encode_answer({"t": "é", "f": 1.5e-05})) == {"t": "é", "f": 1.5e-05}


INPUTS: list[dict[str, Any]] = [
    {"id": "a"},
    {"id": "b", "text": "hello", "uri": "file:///x", "mimeType": "text/plain", "parentId": "p"},
    {"id": "c", "tags": {"k": [1, {"n": None}], "s": "v"}, "blob": "AAEC"},
    {
        "id": "d",
        "embedding": {"data": [1, 2.5, 3]},
        "tensor": {"data": [1, 2, 3, 4], "shape": [2, 2], "dtype": "int32"},
    },
    {"id": "e", "text": None, "tags": None, "embedding": None},
]


def test_document_inputs_are_read_as_strawberry_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``DocumentInput`` values built by its ``from_input`` hook make the same request as
    Strawberry's generic conversion."""
    query = 'mutation($docs: [DocumentInput!]) { post(on: "/s", docs: $docs) { requestId } }'
    fast = _Scripted(_answer)
    run(_post(fast, query, {"docs": INPUTS}))
    definition = get_object_definition(DocumentInput, strict=True)
    generic = _Scripted(_answer)
    with monkeypatch.context() as patch:
        patch.setattr(definition, "from_input", None)
        run(_post(generic, query, {"docs": INPUTS}))
    [a], [b] = fast.requests, generic.requests
    assert len(a.docs) == len(INPUTS)
    assert list(a.docs) == list(b.docs)
    assert a.docs[3].tensor.dtype == "<i4" and list(a.docs[3].tensor.shape) == [2, 2]


# Compiled operations (gateway/compiled.py): from its second request on, a plain ``post``
# text runs without Strawberry's machinery, and answers what the generic path answers.


async def _repeat(
    gateway: Gateway,
    query: str,
    variables: list[dict[str, Any]],
    limits: GraphQLLimits | None = None,
) -> list[bytes]:
    """The bodies of one ``post`` text sent once per ``variables``, in turn, to one app."""
    app = make_app(gateway, limits or GraphQLLimits())
    transport = httpx.ASGITransport(app=app)
    bodies = []
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        for values in variables:
            response = await http.post(
                "/graphql", json={"query": query, "variables": values}, timeout=20
            )
            assert response.status_code == 200, response.text
            bodies.append(response.content)
    return bodies


@pytest.fixture
def compiled_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The outcome of each compiled run: "answered", or "generic" when it handed the request
    to the generic path."""
    from meshflow.gateway import compiled, http

    outcomes: list[str] = []
    run_plan = compiled.run_plan

    async def counting(*args: Any, **kwargs: Any) -> Any:
        try:
            data = await run_plan(*args, **kwargs)
        except compiled.Fallback:
            outcomes.append("generic")
            raise
        outcomes.append("answered")
        return data

    monkeypatch.setattr(http, "run_plan", counting)
    return outcomes


COMPILED = [
    name
    for name in SELECTIONS
    if not any(mark in SELECTIONS[name] for mark in ("@", "...", "matches { id } matches"))
]


@pytest.mark.parametrize("selection", list(SELECTIONS), ids=list(SELECTIONS))
def test_a_compiled_post_answers_what_the_generic_path_answers(
    compiled_runs: list[str], selection: str
) -> None:
    query = _query(SELECTIONS[selection])
    first, second, third = run(_repeat(_Scripted(_answer), query, [{}, {}, {}]))
    assert first == second == third
    assert "errors" not in json.loads(first)
    # fragments, directives and a key selected twice stay with the generic path
    assert compiled_runs == (["answered"] * 2 if selection in COMPILED else [])


def test_a_compiled_post_sends_what_the_generic_path_sends(compiled_runs: list[str]) -> None:
    query = (
        "mutation($on: String!, $docs: [DocumentInput!], $p: JSON, $t: String) "
        "{ answer: post(on: $on, docs: $docs, parameters: $p, targetExecutor: $t) "
        "{ docs { id matches { scores embedding { shape } } } } }"
    )
    gateway = _Scripted(_answer)
    values = {"on": "/s", "docs": INPUTS, "p": {"k": 3, "f": [1.5]}, "t": "exec0"}
    first, second = run(_repeat(gateway, query, [values, values]))
    assert first == second and compiled_runs == ["answered"]
    a, b = gateway.requests
    assert a.header.request_id != b.header.request_id
    for request in (a, b):
        request.header.request_id = ""
    assert a == b  # documents, parameters, target, the fields the executors keep
    assert list(a.header.fields) == ["id", "matches", "matches.embedding", "matches.scores"]


def test_a_compiled_post_refuses_what_the_generic_path_refuses(compiled_runs: list[str]) -> None:
    """A request the compiled run would refuse, or whose variables do not coerce, goes to the
    generic path before anything runs: the same coded errors, and no request sent."""
    query = 'mutation($docs: [DocumentInput!]) { post(on: "/s", docs: $docs) { docs { id } } }'
    gateway = _Scripted(_answer)
    bad = [
        {"docs": [{"id": str(i)} for i in range(3)]},  # over max_docs
        {"docs": [{"id": 1, "nope": True}]},  # does not coerce
        {"docs": [{"id": "x", "embedding": {"data": [1], "dtype": "object"}}]},  # refused dtype
        {"docs": [{"id": "x", "blob": "not base64!"}]},
    ]
    limits = GraphQLLimits(max_docs=2)
    bodies = run(_repeat(gateway, query, [{"docs": [{"id": "a"}]}, *bad, *bad], limits))
    refusals = [json.loads(b) for b in bodies[1:]]
    assert refusals[:4] == refusals[4:]  # the same answer each time
    codes = [r["errors"][0]["extensions"]["code"] for r in refusals[:4]]
    assert codes == ["TOO_MANY_DOCUMENTS", "BAD_USER_INPUT", "BAD_USER_INPUT", "BAD_USER_INPUT"]
    assert all(r["data"] is None for r in refusals)
    # each bad request, the second time too, is handed to the generic path; only the first
    # (good) request reached the Flow
    assert compiled_runs == ["generic"] * 8
    assert len(gateway.requests) == 1


def test_a_failure_after_the_run_is_answered_by_the_generic_path_without_running_again(
    compiled_runs: list[str],
) -> None:
    answers = iter(["ok", "error", "wide"])

    def answer(request: data_request_pb2.DataRequest) -> data_request_pb2.DataRequest:
        out = _answer(request)
        kind = next(answers)
        if kind == "error":
            out.status.code = data_request_pb2.Status.ERROR
            out.status.message = "boom"
            out.status.executor = "exec0"
        elif kind == "wide":  # a shape beyond GraphQL's Int: the projection cannot write it
            out.docs[0].matches[1].embedding.shape[:] = [2**40]
        return out

    query = _query("docs { id matches { id embedding { shape } } }")
    gateway = _Scripted(answer)
    ok, error, wide = (json.loads(b) for b in run(_repeat(gateway, query, [{}, {}, {}])))
    assert compiled_runs == ["generic", "generic"] and len(gateway.requests) == 3
    assert ok["data"]["post"]["docs"][0]["id"] == "full"
    assert error["data"] is None and error["errors"][0]["extensions"]["executor"] == "exec0"
    [field_error] = wide["errors"]
    assert field_error["path"] == ["post", "docs", 0, "matches", 1, "embedding", "shape", 0]


def test_concurrent_compiled_posts_each_get_their_own_answer(compiled_runs: list[str]) -> None:
    def answer(request: data_request_pb2.DataRequest) -> data_request_pb2.DataRequest:
        out = data_request_pb2.DataRequest()
        out.docs.extend(request.docs)
        return out

    query = 'mutation($docs: [DocumentInput!]) { post(on: "/s", docs: $docs) { docs { id } } }'

    async def many() -> list[bytes]:
        app = make_app(_Scripted(answer), GraphQLLimits())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:

            async def one(i: int) -> bytes:
                body = {"query": query, "variables": {"docs": [{"id": f"d{i}"}]}}
                return (await http.post("/graphql", json=body, timeout=20)).content

            first = await one(-1)
            return [first, *await asyncio.gather(*(one(i) for i in range(20)))]

    bodies = [json.loads(b) for b in run(many())]
    assert [b["data"]["post"]["docs"][0]["id"] for b in bodies] == [f"d{i}" for i in range(-1, 20)]
    assert compiled_runs == ["answered"] * 20


def test_compiled_texts_are_bounded_and_refreshed_per_schema() -> None:
    from meshflow.gateway.compiled import PlanCache
    from meshflow.gateway.http import make_schema

    plans = PlanCache(make_schema(GraphQLLimits()), size=2)
    texts = [_query(f"docs {{ id a{i}: text }}") for i in range(3)]
    for text in texts:
        plans.learn(text, None)
    assert plans.get(texts[0], None) is None  # least recently used, out
    assert plans.get(texts[1], None) is not None and plans.get(texts[2], None) is not None
    assert plans.get(texts[2], "Other") is None  # another operation name: its own entry
    plans.learn(_query("docs { id @include(if: $yes) }"), None)  # not compiled, remembered
    assert len(plans._plans) == 2
    small = PlanCache(make_schema(GraphQLLimits()), max_bytes=2 * len(texts[0]) + 5)
    for text in texts:
        small.learn(text, None)
    assert small.get(texts[0], None) is None and small.get(texts[2], None) is not None
    assert len(small._plans) == 2  # by their total size


def test_a_malformed_request_of_a_compiled_text_is_refused_as_before(
    compiled_runs: list[str],
) -> None:
    query = _query("docs { id }")

    async def send() -> list[tuple[int, bytes]]:
        app = make_app(_Scripted(_answer), GraphQLLimits())
        transport = httpx.ASGITransport(app=app)
        out = []
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            for body in [
                {"query": query},
                {"query": query, "operationName": {"a": 1}},
                {"query": query, "operationName": ["Search"]},
                {"query": query, "variables": ["x"]},
                {"query": query, "operationName": "Other"},
            ]:
                answer = await http.post("/graphql", json=body, timeout=20)
                out.append((answer.status_code, answer.content))
        return out

    (ok, _), *refused = run(send())
    assert ok == 200
    assert [status for status, _ in refused] == [400] * 4
    assert b"Other" in refused[3][1]  # no such operation: named in the refusal
    assert compiled_runs == []  # the compiled text was never asked for with these


async def _send(
    gateway: Gateway, bodies: list[dict[str, Any]], persisted: PersistedQueries | None = None
) -> list[dict[str, Any]]:
    """The answers to ``bodies``, posted in turn to one app."""
    app = make_app(gateway, GraphQLLimits(), persisted=persisted)
    transport = httpx.ASGITransport(app=app)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        for body in bodies:
            response = await http.post("/graphql", json=body, timeout=20)
            assert response.status_code == 200, response.text
            out.append(response.json())
    return out


def test_persisted_operations_run_compiled_by_their_text(compiled_runs: list[str]) -> None:
    query = _query("docs { id }")
    apq = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}
    unknown = {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}
    gateway = _Scripted(_answer)
    answers = run(
        _send(
            gateway,
            [
                {"query": query, "extensions": apq},  # registers it: the generic path
                {"extensions": apq},  # by hash: its text's first run, generic
                {"extensions": apq},  # compiled
                {"query": query},  # the same text sent whole: the same plan
                {"extensions": unknown},  # refused by the generic path
                {"extensions": {**apq, "tracing": True}},  # another extension: generic
            ],
        )
    )
    assert answers[0] == answers[1] == answers[2] == answers[3] == answers[5]
    assert answers[0]["data"]["post"]["docs"][0]["id"] == "full"
    assert answers[4]["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert compiled_runs == ["answered", "answered"] and len(gateway.requests) == 5


def test_a_safelist_still_refuses_what_it_does_not_list(
    compiled_runs: list[str], tmp_path: Any
) -> None:
    listed, other = _query("docs { id }"), _query("docs { text }")
    manifest = tmp_path / "manifest.json"
    operations = [{"id": sha256_hex(listed), "body": listed, "name": "Search", "type": "mutation"}]
    manifest.write_text(
        json.dumps(
            {"format": "apollo-persisted-query-manifest", "version": 1, "operations": operations}
        )
    )
    gateway = _Scripted(_answer)
    persisted = PersistedQueries(mode="safelist", manifest=str(manifest))
    bodies = [{"query": listed}, {"query": other}] * 3
    answers = run(_send(gateway, bodies, persisted))
    assert answers[0] == answers[2] == answers[4] and "errors" not in answers[0]
    for refused in answers[1::2]:
        assert refused["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_SAFELIST"
    assert compiled_runs == ["answered", "answered"] and len(gateway.requests) == 3
