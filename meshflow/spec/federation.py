"""Apollo Federation 2 for the GraphQL door, part of a Flow's spec: whether the gateway
serves as a subgraph, and which read-only endpoint resolves each entity type by id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshflow.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Federation:
    """The GraphQL door as an Apollo Federation 2 subgraph (``_service { sdl }``,
    ``_entities``), for a router or ``@apollo/gateway`` to compose with other subgraphs.

    Args:
        enabled: serve the subgraph fields and directives (off by default).
        entities: typed document name -> the read-only endpoint that resolves it by id.
            Each type named gets ``@key(fields: "id")``; another subgraph's reference
            ``{__typename: "Product", id: "p1"}`` is answered by one request to that
            endpoint with a document per id asked (``Document(id="p1")``), whose answer's
            documents of those ids are the entities (an id it does not answer is null).

    Example::

        Flow(federation={'enabled': True, 'entities': {'Product': '/products'}})
    """

    enabled: bool = False
    entities: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"federation.enabled must be true or false, got {self.enabled!r}")
        if not isinstance(self.entities, Mapping):
            raise ConfigError(
                "federation.entities maps typed document names to read-only endpoints, got "
                f"{self.entities!r}"
            )
        checked: dict[str, str] = {}
        for name, endpoint in self.entities.items():
            if not (isinstance(name, str) and name.isidentifier()):
                raise ConfigError(f"federation.entities: {name!r} is not a GraphQL type name")
            if not isinstance(endpoint, str) or not endpoint.strip("/"):
                raise ConfigError(
                    f"federation.entities: {name!r} -> {endpoint!r} is not an endpoint such "
                    "as '/products'"
                )
            checked[name] = endpoint if endpoint.startswith("/") else "/" + endpoint
        object.__setattr__(self, "entities", checked)
        if checked and not self.enabled:
            raise ConfigError("federation.entities are given but federation.enabled is false")

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "entities": dict(self.entities)}
