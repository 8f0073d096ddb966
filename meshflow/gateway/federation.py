"""The GraphQL door as an Apollo Federation 2 subgraph (``Flow(federation=...)``).

Strawberry's federation schema adds ``_service { sdl }`` and, when some type has a key,
``_entities(representations: [_Any!]!)``. Typed documents named in
:class:`~meshflow.spec.federation.Federation` ``entities`` get ``@key(fields: "id")``; a
router's references to them are answered here with one request per type to the endpoint
that resolves it (all the ids asked at once), not one request per reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import strawberry.federation
from graphql import GraphQLError
from strawberry.federation.schema import FederationAny
from strawberry.types import Info

from meshflow.errors import BadRequestError, RequestError
from meshflow.gateway.graphql import _caller, _gateway, request_error
from meshflow.gateway.post import DocumentInput, run_post
from meshflow.gateway.typed import TypeRegistry


class FederatedSchema(strawberry.federation.Schema):
    """A Federation 2 schema whose entities are resolved through read-only endpoints."""

    def __init__(
        self,
        *args: Any,
        entities: Mapping[str, str],
        registry: TypeRegistry | None,
        **kwargs: Any,
    ) -> None:
        self.entity_endpoints = dict(entities)
        self.registry = registry
        super().__init__(*args, **kwargs)  # Federation 2 (its latest version)

    async def entities_resolver(  # type: ignore[override]
        self, info: Info, representations: list[FederationAny]
    ) -> list[FederationAny]:
        results: list[Any] = [None] * len(representations)
        wanted: dict[str, list[int]] = {}
        for index, representation in enumerate(representations):
            name = representation.get("__typename") if isinstance(representation, dict) else None
            wanted.setdefault(str(name), []).append(index)

        async def resolve(type_name: str, indexes: list[int]) -> None:
            try:
                found = await self._resolve(info, type_name, [representations[i] for i in indexes])
            except GraphQLError as error:
                for i in indexes:
                    results[i] = error
                return
            for i, value in zip(indexes, found, strict=True):
                results[i] = value

        await asyncio.gather(*(resolve(name, indexes) for name, indexes in wanted.items()))
        return results

    async def _resolve(self, info: Info, type_name: str, representations: list[Any]) -> list[Any]:
        endpoint = self.entity_endpoints.get(type_name)
        cls = self.registry.objects.get(type_name) if self.registry is not None else None
        if endpoint is None or cls is None:
            raise request_error(BadRequestError(f"{type_name!r} is not an entity of this subgraph"))
        ids = []
        for representation in representations:
            key = representation.get("id")
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise request_error(
                    BadRequestError(f"a reference to {type_name} needs its id, got {key!r}")
                )
            ids.append(str(key))
        try:
            answer = await run_post(
                _gateway(info),
                on=endpoint,
                docs=[DocumentInput(id=i) for i in dict.fromkeys(ids)],
                parameters=None,
                target_executor=None,
                fields=(),
                max_docs=info.context["max_docs"],
                max_answer_bytes=info.context.get("max_answer_bytes"),
                **_caller(info),
            )
        except RequestError as exc:
            raise request_error(exc) from None
        docs = {d.id: d for d in answer.docs}
        return [cls(_pb=docs[i]) if i in docs else None for i in ids]
