"""The typed documents of a Flow, from its executors' ``Endpoints`` answers: which endpoints
are typed, by which named types, and whether the executors agree (no Strawberry here: the
Flow builder checks a Flow with it before starting anything).

An endpoint is typed when one of the executors serving it declares ``@requests(doc=...)`` or
``returns=...`` (:mod:`meshflow.executor.doctypes`); what it returns defaults to what it
takes. A type name means one shape: two executors that declare ``Product`` with different
fields, or one endpoint typed differently by two executors, make a :class:`ConfigError`
naming both. Names are not namespaced per executor on purpose: a frontend's ``Product`` is
one type, whichever executor fills it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from meshflow.errors import ConfigError
from meshflow.proto.v1 import services_pb2

if TYPE_CHECKING:
    from meshflow.spec.flow import FlowSpec

RESERVED_NAMES = frozenset(
    {
        "Query",
        "Mutation",
        "Subscription",
        "Document",
        "DocumentInput",
        "Response",
        "NdArray",
        "NdArrayInput",
        "DeploymentInfo",
        "Edge",
        "FlowInfo",
        "JSON",
        "Floats",
        "ID",
        "String",
        "Int",
        "Float",
        "Boolean",
    }
)
"""Type names of the gateway's own schema, which typed documents cannot take."""


@dataclass(frozen=True)
class TypedEndpoint:
    """An endpoint whose documents are typed: the names of its input and output types (the
    input None when it takes generic ``DocumentInput``) and its typed parameters."""

    name: str
    read_only: bool
    doc: str | None
    returns: str
    parameters: tuple[services_pb2.Parameter, ...] = ()


@dataclass(frozen=True)
class TypedDocuments:
    """Every typed endpoint of a Flow and every named type they use (nested ones too)."""

    endpoints: dict[str, TypedEndpoint] = field(default_factory=dict)
    types: dict[str, services_pb2.DocType] = field(default_factory=dict)
    inputs: frozenset[str] = frozenset()
    """Names of the types used as inputs (``<Name>Input`` in GraphQL)."""
    outputs: frozenset[str] = frozenset()
    """Names of the types used as outputs (object types)."""

    def __bool__(self) -> bool:
        return bool(self.endpoints)


def shape(doc_type: services_pb2.DocType) -> bytes:
    """What must be equal for two declarations of one type name to be the same type."""
    copy = services_pb2.DocType()
    copy.CopyFrom(doc_type)
    _strip(copy)
    return copy.SerializeToString(deterministic=True)


def _strip(doc_type: services_pb2.DocType) -> None:
    doc_type.description = ""
    for f in doc_type.fields:
        f.description = ""
        if f.HasField("doc"):
            _strip(f.doc)


def typed_documents(answers: Iterable[services_pb2.EndpointsResponse]) -> TypedDocuments:
    """The typed endpoints and types of the ``answers`` of a Flow's deployments.

    Raises:
        ConfigError: a type name declared with two shapes, one endpoint typed differently
            by two executors, or a type named like one of the gateway's own.
    """
    types: dict[str, services_pb2.DocType] = {}
    owners: dict[str, str] = {}
    declared: dict[str, dict[str, tuple[str, str]]] = {}  # endpoint -> role -> (type, executor)
    read_only: dict[str, bool] = {}
    params: dict[str, dict[str, services_pb2.Parameter]] = {}
    inputs: set[str] = set()
    outputs: set[str] = set()
    answers = list(answers)
    for answer in answers:
        for endpoint in answer.endpoints:
            for role in ("doc", "returns"):
                if not endpoint.HasField(role):
                    continue
                doc_type = getattr(endpoint, role)
                _register(doc_type, answer.executor, types, owners)
                roles = declared.setdefault(endpoint.name, {})
                known = roles.get(role)
                if known is not None and known[0] != doc_type.name:
                    raise ConfigError(
                        f"endpoint {endpoint.name!r} is typed {role}={known[0]} by executor "
                        f"{known[1]!r} but {role}={doc_type.name} by {answer.executor!r}; "
                        "executors serving one endpoint must declare the same typed documents"
                    )
                roles[role] = (doc_type.name, answer.executor)
    endpoints: dict[str, TypedEndpoint] = {}
    for answer in answers:
        for endpoint in answer.endpoints:
            if endpoint.name not in declared:
                continue
            read_only[endpoint.name] = read_only.get(endpoint.name, False) or endpoint.read_only
            merge_parameters(params.setdefault(endpoint.name, {}), endpoint.parameters)
    for name, roles in sorted(declared.items()):
        doc = roles["doc"][0] if "doc" in roles else None
        returns = roles["returns"][0] if "returns" in roles else doc
        assert returns is not None
        if doc is not None:
            inputs.add(doc)
        _outputs(types[returns], outputs)
        endpoints[name] = TypedEndpoint(
            name=name,
            read_only=read_only.get(name, False),
            doc=doc,
            returns=returns,
            parameters=tuple(params.get(name, {}).values()),
        )
    taken = outputs | {f"{n}Input" for n in inputs}
    clash = outputs & {f"{n}Input" for n in inputs}
    if clash:
        raise ConfigError(
            f"typed document {sorted(clash)[0]!r} is named like the input type of another; "
            "rename one of them"
        )
    reserved = sorted(taken & RESERVED_NAMES)
    if reserved:
        raise ConfigError(
            f"typed document {reserved[0]!r} (executor {owners.get(reserved[0], '?')!r}) is "
            "named like a type of the gateway's own schema; rename the dataclass"
        )
    return TypedDocuments(
        endpoints=endpoints,
        types=types,
        inputs=frozenset(inputs),
        outputs=frozenset(outputs),
    )


def _register(
    doc_type: services_pb2.DocType,
    executor: str,
    types: dict[str, services_pb2.DocType],
    owners: dict[str, str],
) -> None:
    known = types.get(doc_type.name)
    if known is not None and shape(known) != shape(doc_type):
        raise ConfigError(
            f"two typed documents are named {doc_type.name!r} with different fields: one of "
            f"executor {owners[doc_type.name]!r} ({_fields(known)}), one of {executor!r} "
            f"({_fields(doc_type)}); GraphQL has one type per name: rename one dataclass, or "
            "share one dataclass between the executors"
        )
    if known is None:
        types[doc_type.name] = doc_type
        owners[doc_type.name] = executor
    for f in doc_type.fields:
        if f.HasField("doc"):
            _register(f.doc, executor, types, owners)


def _fields(doc_type: services_pb2.DocType) -> str:
    return ", ".join(f"{f.name}: {f.type}{'[]' if f.list else ''}" for f in doc_type.fields)


def _outputs(doc_type: services_pb2.DocType, found: set[str]) -> None:
    found.add(doc_type.name)
    for f in doc_type.fields:
        if f.HasField("doc"):
            _outputs(f.doc, found)


def check_flow(spec: FlowSpec) -> None:
    """Refuse a Flow whose executors' typed documents conflict, before it starts: the
    classes its builder imported are described as their ``Endpoints`` RPC would."""
    from meshflow.executor.describe import describe_endpoints

    answers = []
    for dep in spec.deployments:
        try:
            cls = dep.executor_class
        except ConfigError:  # not imported here (another environment): the gateway checks
            continue
        answers.append(describe_endpoints(dep.name, cls.endpoints))
    typed = typed_documents(answers)
    if spec.federation.enabled and len(answers) == len(spec.deployments):
        check_entities(typed, spec.federation.entities)


def check_entities(typed: TypedDocuments, entities: Mapping[str, str]) -> None:
    """Each federated entity is a typed document with an ``id``, resolved by a read-only
    endpoint that returns it."""
    for name, endpoint in entities.items():
        doc_type = typed.types.get(name)
        if doc_type is None or name not in typed.outputs:
            known = ", ".join(sorted(typed.outputs)) or "none"
            raise ConfigError(
                f"federation.entities names {name!r}, which no executor returns as a typed "
                f"document (returned: {known})"
            )
        if not any(f.source == "id" for f in doc_type.fields):
            raise ConfigError(
                f"federation.entities: {name} has no id field; an entity's key is its id: "
                "add `id: str` to the dataclass"
            )
        served = typed.endpoints.get(endpoint)
        if served is None or not served.read_only or served.returns != name:
            raise ConfigError(
                f"federation.entities: {name!r} -> {endpoint!r}: the endpoint must be "
                f"read-only and return {name} (@requests(on={endpoint!r}, read_only=True, "
                f"returns={name}))"
            )


def merge_parameters(
    merged: dict[str, services_pb2.Parameter], parameters: Iterable[services_pb2.Parameter]
) -> None:
    """Add one deployment's parameters of an endpoint to ``merged``; a parameter another
    deployment types differently becomes ``json``."""
    for p in parameters:
        known = merged.get(p.name)
        if known is not None and (known.type, known.list) != (p.type, p.list):
            merged[p.name] = services_pb2.Parameter(name=p.name, type="json")
        else:
            merged[p.name] = p
