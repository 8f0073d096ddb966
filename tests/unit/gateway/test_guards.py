"""The GraphQL door's guards: every limit refused with its code before any resolver runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from graphql import get_introspection_query, parse

from meshflow.gateway.guards import count_documents, measure
from meshflow.gateway.http import make_schema
from meshflow.spec.limits import GraphQLLimits


def fragment_bomb(levels: int, width: int = 10) -> str:
    """The attack of issue 14: each fragment spreads the one below it ``width`` times."""
    parts = ["fragment F0 on Query { __typename }"]
    for i in range(1, levels + 1):
        spreads = " ".join([f"...F{i - 1}"] * width)
        parts.append(f"fragment F{i} on Query {{ {spreads} }}")
    return f"query {{ ...F{levels} }} " + " ".join(parts)


def run(query: str, limits: GraphQLLimits | None = None, **variables: Any) -> list[str]:
    """The error codes of executing ``query`` (no resolver of the gateway may run)."""
    schema = make_schema(limits or GraphQLLimits())
    result = asyncio.run(schema.execute(query, variable_values=variables, context_value={}))
    return [(e.extensions or {}).get("code", "") for e in result.errors or ()]


@pytest.mark.parametrize("levels", [5, 7, 9, 12])
def test_fragment_bomb_is_refused_by_its_expanded_size(levels: int) -> None:
    query = fragment_bomb(levels)
    assert len(query) < 1100
    assert measure(parse(query)).fields == 10**levels
    assert run(query) == ["FIELD_LIMIT_EXCEEDED"]


def test_fragment_bomb_of_aliases_counts_every_expanded_alias() -> None:
    query = fragment_bomb(4).replace("{ __typename }", "{ a: __typename }")
    assert measure(parse(query)).aliases == 10**4
    assert run(query, GraphQLLimits(max_fields=100_000)) == ["ALIAS_LIMIT_EXCEEDED"]


def chain(n: int) -> str:
    parts = [f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(n)]
    parts.append(f"fragment F{n} on Query {{ __typename }}")
    return "query { ...F0 } " + " ".join(parts)


def test_a_long_chain_of_fragments_is_measured_without_recursion() -> None:
    assert measure(parse(chain(2000))).fields == 1
    assert run(chain(150), GraphQLLimits(max_tokens=10_000)) == []
    # graphql-core's validation gives up on longer chains: a coded refusal, not a crash.
    assert run(chain(400), GraphQLLimits(max_tokens=10_000)) == ["GRAPHQL_VALIDATION_FAILED"]


def test_fragments_that_spread_each_other_are_a_validation_error() -> None:
    query = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A __typename }"
    assert run(query) == ["GRAPHQL_VALIDATION_FAILED"]


def test_depth_counts_fields_with_selections_through_fragments() -> None:
    deep = 'mutation { post(on: "/") { ...D } } fragment D on Response { docs { matches { id } } }'
    assert measure(parse(deep)).depth == 3
    assert run(deep, GraphQLLimits(max_depth=2)) == ["DEPTH_LIMIT_EXCEEDED"]


def test_standard_introspection_query_fits_the_default_limits() -> None:
    assert run(get_introspection_query()) == []


def test_nested_introspection_is_bounded_by_depth() -> None:
    level = "fields { type { "
    query = "{ __schema { types { " + level * 5 + "name" + " } }" * 5 + " } } }"
    assert run(query) == ["DEPTH_LIMIT_EXCEEDED"]


def test_query_text_is_limited_before_parsing() -> None:
    query = "{ __typename } #" + "x" * 70_000
    assert run(query) == ["QUERY_TOO_LARGE"]
    assert run("{ __typename } #" + "é" * 40_000) == ["QUERY_TOO_LARGE"]  # 80 kB, 40k chars


def test_tokens_and_nesting_are_refused_while_parsing() -> None:
    assert run("{ " + "__typename " * 3000 + "}") == ["TOKEN_LIMIT_EXCEEDED"]
    assert run("{ a " + "{ a " * 600 + "}" * 601) == ["DEPTH_LIMIT_EXCEEDED"]
    assert run("{ flow {") == ["GRAPHQL_PARSE_FAILED"]


POST = 'p{i}: post(on: "/", docs: $docs) {{ requestId }}'


def test_documents_are_counted_over_every_alias_of_an_operation() -> None:
    fields = " ".join(POST.format(i=i) for i in range(15))
    query = f"mutation($docs: [DocumentInput!]) {{ {fields} }}"
    docs = [{"text": "x"}] * 100
    assert run(query, docs=docs) == ["TOO_MANY_DOCUMENTS"]
    assert count_documents(parse(query), None, {"docs": docs}) == (1500, 0)


def test_documents_in_literals_and_fragments_are_counted() -> None:
    query = (
        'mutation { ...M  b: post(on: "/", docs: [{}, {}]) { requestId } } '
        'fragment M on Mutation { a: post(on: "/", docs: [{}, {}, {}]) { requestId } }'
    )
    assert count_documents(parse(query), None, {}) == (5, 0)
    assert run(query, GraphQLLimits(max_docs=4)) == ["TOO_MANY_DOCUMENTS"]


STREAM = 'subscription($b: [[DocumentInput!]!]!) { stream(on: "/", batches: $b) { requestId } }'


def test_stream_batches_and_their_documents_are_capped() -> None:
    schema = make_schema(GraphQLLimits(max_batches=10, max_docs=50))

    async def codes(batches: list[list[dict[str, Any]]]) -> list[str]:
        stream = await schema.subscribe(STREAM, variable_values={"b": batches}, context_value={})
        if hasattr(stream, "errors"):
            return [(e.extensions or {}).get("code", "") for e in stream.errors or ()]
        async for result in stream:  # pragma: no branch - the first result is the refusal
            return [(e.extensions or {}).get("code", "") for e in result.errors or ()]
        return []

    assert asyncio.run(codes([[]] * 1_000_000)) == ["TOO_MANY_BATCHES"]
    assert asyncio.run(codes([[{}] * 6] * 9)) == ["TOO_MANY_DOCUMENTS"]


def test_every_limit_must_be_a_positive_whole_number() -> None:
    from meshflow.errors import ConfigError

    for name in ("max_fields", "max_query_bytes", "max_batches", "refusals_per_second"):
        with pytest.raises(ConfigError, match=name):
            GraphQLLimits(**{name: 0})


def test_a_repeated_query_is_parsed_once_even_when_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from meshflow.gateway import guards

    parsed: list[str] = []
    real = guards.parse

    def counting(source: str, **kwargs: Any) -> Any:
        parsed.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(guards, "parse", counting)
    schema = make_schema(GraphQLLimits())
    bomb = fragment_bomb(7)
    for _ in range(5):
        result = asyncio.run(schema.execute(bomb, context_value={}))
        assert [e.extensions["code"] for e in result.errors or ()] == ["FIELD_LIMIT_EXCEEDED"]
        result = asyncio.run(schema.execute("{ flow {", context_value={}))
        assert [e.extensions["code"] for e in result.errors or ()] == ["GRAPHQL_PARSE_FAILED"]
    assert parsed == [bomb, "{ flow {"]


def test_the_cache_is_bounded_by_entries_and_by_bytes() -> None:
    from meshflow.gateway.guards import QueryCache

    limits = GraphQLLimits()
    cache = QueryCache(max_entries=3, max_bytes=10_000)
    for i in range(5):
        cache.get(f"{{ a{i}: __typename }}", limits)
    assert len(cache._entries) == 3
    big = "{ __typename } #" + "x" * 6000
    cache.get(big, limits)
    cache.get(big + "y", limits)
    assert cache._bytes <= 10_000 and big + "y" in cache._entries and big not in cache._entries
