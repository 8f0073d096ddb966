"""Compiled operations: the ``post`` mutation run without Strawberry's per-request machinery.

A ``post`` of one document spends most of the gateway's CPU around the call, not in it:
Strawberry's extension hooks, graphql-core's execution context, Strawberry's conversion of the
arguments into input objects, the answer completed field by field. All of that depends only
on the query text, which clients send the same way each time. So once a text has run through
the generic path without an error, the gateway *compiles* it: the operation, its ``post``
field and the readers of its answer (the projection of :mod:`meshflow.gateway.answers`), and
runs the next requests of that text directly:

1. the guards that depend on the request's variables, as :class:`~.guards.QueryGuard` runs
   them: the documents counted against the limits, the scopes of the endpoints it names;
2. the variables coerced and the arguments read by graphql-core's own functions;
3. :func:`~meshflow.gateway.post.run_post`, the same call the resolver makes;
4. the answer projected from the protobuf into the response's dict.

The checks that depend only on the text (parsing, the size limits, validation against the
schema, the operation's type) passed when it ran first, with the same schema and limits.

Only a plain shape is compiled: one operation whose one top-level field is the generic
``post``, over POST, with no directive and no fragment anywhere, each response key once. A
persisted operation runs by its text once the gateway knows it (a hash whose text is
registered or in the safelist); its registration and every refusal (unknown hash, a text not
in the safelist) stay with the guard. Anything else takes the generic path, as does any
request the compiled run would refuse or cannot read (a guard's refusal, a variable that does
not coerce): the generic path then answers it exactly as before. Once the Flow has run the
request, a failure (an executor's error, a refusal of the Flow) or an answer the projection
cannot write is handed to the generic path with the outcome: the ``post`` resolver completes
it (``RAN``), so that errors, their paths and codes are those of the generic path, and
nothing runs twice.

Plans are kept per schema (a new endpoint's typed schema starts afresh), at most
:data:`MAX_PLANS` query texts and :data:`MAX_PLAN_BYTES` of them, least recently used first
out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    parse,
)
from graphql.execution.values import get_argument_values, get_variable_values
from strawberry.types.nodes import SelectedField

from meshflow.document.proto import results_to_dict
from meshflow.gateway.answers import NotPlanned, Read, field_reader, object_reader
from meshflow.gateway.graphql import (
    DocumentInput,
    document_input,
    name_operation_span,
    wanted_fields,
)
from meshflow.gateway.guards import (
    check_documents,
    count_documents,
    endpoints,
    variable_uses,
)
from meshflow.gateway.post import run_post
from meshflow.proto.v1 import data_request_pb2
from meshflow.spec.limits import GraphQLLimits

MAX_PLANS = 256
"""Compiled query texts kept per schema."""
MAX_PLAN_BYTES = 1 << 20
"""Their total size (plain ``post`` texts are small; distinct large ones cannot fill the
memory)."""


@dataclass(frozen=True)
class PostPlan:
    """A query text whose one operation is a plain ``post``, compiled."""

    document: DocumentNode
    operation: OperationDefinitionNode
    operation_name: str | None
    node: FieldNode
    """The ``post`` field as the query writes it."""
    definition: GraphQLField
    key: str
    """Its response key (its alias, or ``post``)."""
    fields: tuple[str, ...]
    """The document fields the last executors keep (as the resolver's pushdown)."""
    answer: Read
    """Reads the answer's ``DataRequest`` into the value of ``key``."""


def compile_post(schema: GraphQLSchema, query: str, operation_name: str | None) -> PostPlan | None:
    """The plan of ``query``, or None when its shape is not one compiled (see the module)."""
    document = parse(query)
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(document.definitions) != 1 or len(operations) != 1:
        return None
    operation = operations[0]
    if operation_name is not None and (
        operation.name is None or operation.name.value != operation_name
    ):
        return None
    mutation = schema.mutation_type
    if operation.operation != OperationType.MUTATION or mutation is None or operation.directives:
        return None
    if any(v.directives for v in operation.variable_definitions or ()):
        return None
    if any(count > 1 for count in variable_uses(document, operation).values()):
        return None  # the guard weighs the copies of a variable used twice, on each request
    roots = operation.selection_set.selections
    if len(roots) != 1 or not isinstance(roots[0], FieldNode) or roots[0].name.value != "post":
        return None
    node = roots[0]
    definition = mutation.fields.get("post")
    if definition is None or node.directives or node.selection_set is None:
        return None
    if set(definition.args) != {"on", "docs", "parameters", "targetExecutor"}:
        return None  # not the generic post (a typed schema names its own fields)
    try:
        answer = _response(node.selection_set)
        docs = _only(node.selection_set, "docs")
        wanted = wanted_fields(_selected(docs).selections) if docs is not None else set()
    except NotPlanned:
        return None
    return PostPlan(
        document=document,
        operation=operation,
        operation_name=operation_name,
        node=node,
        definition=definition,
        key=node.alias.value if node.alias else "post",
        fields=tuple(sorted(wanted)) or ("id",),
        answer=answer,
    )


def _fields(selection_set: SelectionSetNode) -> list[FieldNode]:
    """The selection's fields: plain fields only, each response key once."""
    out: list[FieldNode] = []
    keys: set[str] = set()
    for sel in selection_set.selections:
        if not isinstance(sel, FieldNode) or sel.directives or sel.arguments:
            raise NotPlanned
        key = (sel.alias or sel.name).value
        if key in keys:
            raise NotPlanned
        keys.add(key)
        out.append(sel)
    return out


def _only(selection_set: SelectionSetNode, name: str) -> FieldNode | None:
    return next((f for f in _fields(selection_set) if f.name.value == name), None)


def _selected(node: FieldNode) -> SelectedField:
    """A field as Strawberry's ``info.selected_fields`` shows it (for ``wanted_fields``)."""
    inner = node.selection_set.selections if node.selection_set else ()
    return SelectedField(
        name=node.name.value,
        directives={},
        arguments={},
        selections=[_selected(s) for s in inner if isinstance(s, FieldNode)],
        alias=node.alias.value if node.alias else None,
    )


def _results(answer: data_request_pb2.DataRequest) -> dict[str, Any]:
    return results_to_dict(answer.results)


def _response(selection_set: SelectionSetNode) -> Read:
    """Reads a ``Response`` (the answer's ``DataRequest``) as ``ResponseType`` resolves it."""
    steps: list[tuple[str, Read]] = []
    for node in _fields(selection_set):
        name = node.name.value
        read: Read
        if name == "__typename":
            read = _constant("Response")
        elif name == "requestId":
            read = _request_id
        elif name == "results":
            read = _results
        elif name == "batch":
            read = _constant(None)
        elif name == "docs" and node.selection_set is not None:
            read = _documents(_object("Document", node.selection_set))
        else:
            raise NotPlanned
        steps.append(((node.alias or node.name).value, read))
    return object_reader(steps)


def _constant(value: Any) -> Read:
    return lambda _: value


def _request_id(answer: data_request_pb2.DataRequest) -> str:
    return answer.header.request_id


def _documents(document: Read) -> Read:
    return lambda answer: [document(d) for d in answer.docs]


def _object(type_name: str, selection_set: SelectionSetNode) -> Read:
    """Reads a ``Document`` or ``NdArray`` message into the dict of its response keys."""
    steps: list[tuple[str, Read]] = []
    for node in _fields(selection_set):
        inner = node.selection_set

        def sub(name: str, inner: SelectionSetNode | None = inner) -> Read:
            if inner is None:
                raise NotPlanned
            return _object(name, inner)

        key = (node.alias or node.name).value
        steps.append((key, field_reader(type_name, node.name.value, sub)))
    return object_reader(steps)


class PlanCache:
    """The compiled query texts of one schema, least recently used first out."""

    def __init__(self, schema: Any, size: int = MAX_PLANS, max_bytes: int = MAX_PLAN_BYTES) -> None:
        self.schema = schema
        """The Strawberry schema the plans were compiled for."""
        self.graphql_schema: GraphQLSchema = schema._schema
        self.size = size
        self.max_bytes = max_bytes
        self._plans: OrderedDict[tuple[str, str | None], PostPlan | None] = OrderedDict()
        self._bytes = 0

    def get(self, query: str, operation_name: str | None) -> PostPlan | None:
        key = (query, operation_name)
        plan = self._plans.get(key)
        if plan is not None:
            self._plans.move_to_end(key)
        return plan

    def learn(self, query: str, operation_name: str | None) -> None:
        """Compile a text that just ran without an error (once: a text not compiled is
        remembered as such)."""
        key = (query, operation_name)
        if key in self._plans:
            return
        try:
            plan = compile_post(self.graphql_schema, query, operation_name)
        except GraphQLError:
            plan = None
        self._plans[key] = plan
        self._bytes += len(query)
        while len(self._plans) > self.size or self._bytes > self.max_bytes:
            (old, _), _ = self._plans.popitem(last=False)
            self._bytes -= len(old)


class Fallback(Exception):
    """The compiled run hands the request to the generic path; ``ran``: the outcome of a
    ``post`` already run (None: nothing ran)."""

    def __init__(self, ran: Callable[[], Awaitable[data_request_pb2.DataRequest]] | None = None):
        super().__init__()
        self.ran = ran


async def run_plan(
    plan: PostPlan,
    schema: GraphQLSchema,
    variables: Mapping[str, Any] | None,
    context: dict[str, Any],
    limits: GraphQLLimits,
    permitted: Callable[[Any, list[str]], bool],
) -> dict[str, Any]:
    """The ``data`` of a compiled ``post``.

    Raises:
        Fallback: the generic path answers this request (see the module's docstring).
    """
    raw = variables or {}
    if not isinstance(raw, dict):
        raise Fallback
    if check_documents(*count_documents(plan.document, plan.operation_name, raw), limits):
        raise Fallback
    if not permitted(context, endpoints(plan.document, plan.operation_name, raw)):
        raise Fallback  # the generic path refuses it, logged and counted once
    coerced = get_variable_values(schema, plan.operation.variable_definitions or [], raw)
    if isinstance(coerced, list):  # errors
        raise Fallback
    try:
        args = get_argument_values(plan.definition, plan.node, coerced)
        docs = [document_input(DocumentInput, d, None) for d in args.get("docs") or ()]
    except Exception:  # the generic path reports it
        raise Fallback from None
    gateway = context["gateway"]
    if gateway.tracing:
        name_operation_span(plan.operation, "post")
    try:
        answer = await run_post(
            gateway,
            on=args["on"],
            docs=docs,
            parameters=args.get("parameters"),
            target_executor=args.get("targetExecutor"),
            fields=plan.fields,
            max_docs=context["max_docs"],
            max_answer_bytes=context.get("max_answer_bytes"),
            identity=context.get("identity"),
            door=context.get("door", ""),
        )
    except Exception as exc:  # the resolver raises it again: the generic path's error
        raise Fallback(_raising(exc)) from None
    try:
        return {plan.key: plan.answer(answer)}
    except Exception:
        raise Fallback(_returning(answer)) from None


def _raising(exc: Exception) -> Callable[[], Awaitable[data_request_pb2.DataRequest]]:
    async def ran() -> data_request_pb2.DataRequest:
        raise exc

    return ran


def _returning(
    answer: data_request_pb2.DataRequest,
) -> Callable[[], Awaitable[data_request_pb2.DataRequest]]:
    async def ran() -> data_request_pb2.DataRequest:
        return answer

    return ran
