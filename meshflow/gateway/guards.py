"""The guards of the GraphQL door: every bound of :class:`GraphQLLimits` is checked before
any resolver runs, in time linear in the query's text.

One Strawberry extension, :class:`QueryGuard`, replaces the parser and validation caches and
Strawberry's depth, alias and token limiters:

- **parse**: the query text's size (``QUERY_TOO_LARGE``) is checked before parsing, its
  tokens (``TOKEN_LIMIT_EXCEEDED``) while parsing; what is learnt of a text (its document and
  cost, or its parse error, then its validation errors) is cached by the text.
- **measure**: depth (``DEPTH_LIMIT_EXCEEDED``), aliases (``ALIAS_LIMIT_EXCEEDED``) and fields
  (``FIELD_LIMIT_EXCEEDED``) are counted as if every fragment spread were written out, but
  each fragment is measured once: a 600-byte query whose fragments spread ten times per level
  expands to ten million fields, and is refused in microseconds instead of being walked.
- **count**: the documents of the whole operation, over every field, alias and stream batch
  (``TOO_MANY_DOCUMENTS``) and the batches of a stream (``TOO_MANY_BATCHES``), from the query
  and its raw variables, before any input object is built.
- **authorize**: the scopes of the endpoints the operation names (``FORBIDDEN``), before
  the variables are coerced.
- **validate**: then the standard validation, once per text.

Every refusal is a GraphQL error with ``extensions.code``; none is logged as a gateway fault.
Each refusal but ``FORBIDDEN`` counts against the client's address in a
:class:`~meshflow.gateway.tarpit.Tarpit`, which slows down a client that keeps sending them.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    parse,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from meshflow.errors import TooManyDocumentsError
from meshflow.gateway.persisted import PROTOCOL_STEPS, PersistedOperations
from meshflow.gateway.tarpit import HELD, Tarpit
from meshflow.spec.limits import GraphQLLimits

# Introspection's type references nest as deep as a type is wrapped (``[[T!]!]!``): they
# cost nothing per level, so the standard introspection query fits the depth limit.
_FREE_DEPTH = frozenset({"ofType"})


def coded(message: str, code: str, **extra: Any) -> GraphQLError:
    """A GraphQL error with ``extensions.code``."""
    return GraphQLError(message, extensions={"code": code, **extra})


@dataclass(frozen=True)
class Cost:
    """What a selection set costs with its fragments expanded."""

    depth: int = 0
    """The most fields with a selection of their own above any field."""
    aliases: int = 0
    fields: int = 0


_FREE = Cost()


def measure(document: DocumentNode) -> Cost:
    """The cost of every operation of ``document``: depth is the deepest, aliases and fields
    add up. Each fragment is measured once, in an order where its spreads come first;
    a fragment that spreads itself (invalid, refused by validation) counts as empty."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    costs: dict[str, Cost] = {}
    for name in _dependency_order(fragments):
        costs[name] = _walk(fragments[name].selection_set, costs)
    depth = aliases = fields = 0
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            cost = _walk(definition.selection_set, costs)
            depth = max(depth, cost.depth)
            aliases += cost.aliases
            fields += cost.fields
    return Cost(depth=depth, aliases=aliases, fields=fields)


def _dependency_order(fragments: Mapping[str, FragmentDefinitionNode]) -> list[str]:
    """Fragment names, each after the fragments it spreads (iterative: a chain of hundreds
    of fragments must not exhaust Python's stack)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done
    for root in fragments:
        if state.get(root):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(_spreads(fragments[root])))]
        state[root] = 1
        while stack:
            name, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                stack.pop()
                state[name] = 2
                order.append(name)
            elif child in fragments and not state.get(child):
                state[child] = 1
                stack.append((child, iter(_spreads(fragments[child]))))
    return order


def _spreads(fragment: FragmentDefinitionNode) -> list[str]:
    found: list[str] = []
    pending = [fragment.selection_set]
    while pending:
        selection_set = pending.pop()
        for sel in selection_set.selections:
            if isinstance(sel, FragmentSpreadNode):
                found.append(sel.name.value)
            elif isinstance(sel, FieldNode | InlineFragmentNode) and sel.selection_set:
                pending.append(sel.selection_set)
    return found


def _walk(selection_set: SelectionSetNode, fragments: Mapping[str, Cost]) -> Cost:
    depth = aliases = fields = 0
    for sel in selection_set.selections:
        if isinstance(sel, FieldNode):
            inner = _walk(sel.selection_set, fragments) if sel.selection_set else _FREE
            fields += 1 + inner.fields
            aliases += inner.aliases + (1 if sel.alias else 0)
            if sel.selection_set:
                step = 0 if sel.name.value in _FREE_DEPTH else 1
                depth = max(depth, step + inner.depth)
        else:
            if isinstance(sel, InlineFragmentNode):
                inner = _walk(sel.selection_set, fragments)
            else:
                assert isinstance(sel, FragmentSpreadNode)
                inner = fragments.get(sel.name.value, _FREE)
            fields += inner.fields
            aliases += inner.aliases
            depth = max(depth, inner.depth)
    return Cost(depth=depth, aliases=aliases, fields=fields)


def check_cost(cost: Cost, limits: GraphQLLimits) -> GraphQLError | None:
    """The refusal for a query over a limit, or None."""
    if cost.depth > limits.max_depth:
        return coded(
            f"the query nests {cost.depth} levels of fields; the gateway allows "
            f"{limits.max_depth} (GraphQLLimits.max_depth)",
            "DEPTH_LIMIT_EXCEEDED",
        )
    if cost.aliases > limits.max_aliases:
        return coded(
            f"{cost.aliases} aliases found (fragments expanded); the gateway allows "
            f"{limits.max_aliases} (GraphQLLimits.max_aliases)",
            "ALIAS_LIMIT_EXCEEDED",
        )
    if cost.fields > limits.max_fields:
        return coded(
            f"the query selects {cost.fields} fields with its fragments expanded; the gateway "
            f"allows {limits.max_fields} (GraphQLLimits.max_fields)",
            "FIELD_LIMIT_EXCEEDED",
        )
    return None


# -- documents per operation ------------------------------------------------------------------


def _operation(
    document: DocumentNode, operation_name: str | None
) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == operation_name), None)


def _root_fields(document: DocumentNode, operation: OperationDefinitionNode) -> list[FieldNode]:
    """The operation's top-level fields, through fragments, each fragment once."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    found: list[FieldNode] = []
    seen: set[str] = set()  # execution too runs a fragment once per selection set
    pending = [operation.selection_set]
    while pending:
        for sel in pending.pop().selections:
            if isinstance(sel, FieldNode):
                found.append(sel)
            elif isinstance(sel, InlineFragmentNode):
                pending.append(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                if name in fragments and name not in seen:
                    seen.add(name)
                    pending.append(fragments[name].selection_set)
    return found


def _length(value: ValueNode, variables: Mapping[str, Any]) -> tuple[int, list[Any]]:
    """How many items a list argument holds, and the items (AST nodes or raw JSON)."""
    if isinstance(value, VariableNode):
        raw = variables.get(value.name.value)
        if raw is None:
            return 0, []
        items = raw if isinstance(raw, list) else [raw]
        return len(items), items
    if isinstance(value, ListValueNode):
        return len(value.values), list(value.values)
    return 1, [value]  # a single item stands for a list of one


def count_documents(
    document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any] | None
) -> tuple[int, int]:
    """(documents, stream batches) the operation carries, over all its fields and aliases:
    ``docs`` arguments and the batches of ``batches`` arguments."""
    operation = _operation(document, operation_name)
    if operation is None:
        return 0, 0  # validation says which operation is missing
    variables = variables or {}
    docs = batches = 0
    for field in _root_fields(document, operation):
        for argument in field.arguments or ():
            name = argument.name.value
            if name == "docs":
                docs += _length(argument.value, variables)[0]
            elif name == "batches":
                count, items = _length(argument.value, variables)
                batches += count
                for item in items:
                    if isinstance(item, ValueNode):
                        docs += _length(item, variables)[0]
                    else:
                        docs += len(item) if isinstance(item, list) else 1
    return docs, batches


def endpoints(
    document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any] | None
) -> list[str]:
    """The endpoints named by the ``on`` arguments of the operation's top-level fields."""
    operation = _operation(document, operation_name)
    if operation is None:
        return []
    found = []
    for field in _root_fields(document, operation):
        for argument in field.arguments or ():
            if argument.name.value != "on":
                continue
            value = argument.value
            if isinstance(value, VariableNode):
                raw = (variables or {}).get(value.name.value)
                if isinstance(raw, str):
                    found.append(raw)
            elif isinstance(value, StringValueNode):
                found.append(value.value)
    return found


_REUSE_ALLOWANCE = 64 * 1024


def variable_uses(document: DocumentNode, operation: OperationDefinitionNode) -> dict[str, int]:
    """How many times each variable is used in the arguments of the operation's top-level
    fields."""
    uses: dict[str, int] = {}
    pending: list[Any] = [
        argument.value
        for field in _root_fields(document, operation)
        for argument in field.arguments or ()
    ]
    while pending:
        value = pending.pop()
        if isinstance(value, VariableNode):
            uses[value.name.value] = uses.get(value.name.value, 0) + 1
        elif isinstance(value, ListValueNode):
            pending.extend(value.values)
        elif isinstance(value, ObjectValueNode):
            pending.extend(f.value for f in value.fields)
    return uses


def check_variable_uses(
    document: DocumentNode, operation_name: str | None, variables: Mapping[str, Any] | None
) -> GraphQLError | None:
    """The refusal of an operation whose variables, each copied once per use in its
    arguments (``docs: [{embedding: $e}, {embedding: $e}, ...]``), would make a request
    larger than its text by more than 64 KiB, or None. Such copies are built whole, so a
    small request could otherwise make the gateway build a huge one."""
    operation = _operation(document, operation_name)
    if operation is None or not operation.variable_definitions:
        return None
    variables = variables or {}
    uses = variable_uses(document, operation)
    defaults = {
        d.variable.name.value: d.default_value
        for d in operation.variable_definitions or ()
        if d.default_value is not None
    }
    extra = 0
    for name, count in uses.items():
        if count < 2:
            continue
        if name in variables:
            size = len(json.dumps(variables[name], separators=(",", ":")))
        elif name in defaults:  # its default, written in the query's text
            loc = defaults[name].loc
            size = loc.end - loc.start if loc is not None else 0
        else:
            continue
        extra += (count - 1) * size
        if extra > _REUSE_ALLOWANCE:
            return coded(
                f"variable ${name} is used {count} times: each use copies it, and the "
                f"copies would pass {_REUSE_ALLOWANCE // 1024} KiB; send the values once "
                "per use instead",
                "BAD_USER_INPUT",
            )
    return None


def check_documents(docs: int, batches: int, limits: GraphQLLimits) -> GraphQLError | None:
    if batches > limits.max_batches:
        return coded(
            f"{batches} batches in one stream; the gateway accepts at most {limits.max_batches} "
            "(GraphQLLimits.max_batches): open another subscription for the rest",
            "TOO_MANY_BATCHES",
        )
    if docs > limits.max_docs:
        return coded(
            f"{docs} documents in one operation (all fields, aliases and batches together); "
            f"the gateway accepts at most {limits.max_docs} (GraphQLLimits.max_docs)",
            TooManyDocumentsError.graphql_code,
        )
    return None


# -- the extension ----------------------------------------------------------------------------


@dataclass
class Checked:
    """What the guard learnt of one query text: its document and cost, or why it does not
    parse; the schema's validation errors once a request got that far."""

    document: DocumentNode | None
    cost: Cost = _FREE
    parse_error: GraphQLError | None = None
    errors: list[GraphQLError] | None = None


class QueryCache:
    """Checked query texts, the least recently used dropped first, bounded by the number of
    texts and by their total size (so distinct large queries cannot fill the memory).

    Refused texts are kept too: an attacker repeating a query pays one parse, not one each
    time. One cache per schema (validation depends on it).
    """

    def __init__(self, *, max_entries: int = 512, max_bytes: int = 8 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Checked] = OrderedDict()
        self._bytes = 0

    def get(self, query: str, limits: GraphQLLimits) -> Checked:
        checked = self._entries.get(query)
        if checked is not None:
            self._entries.move_to_end(query)
            return checked
        checked = check_query(query, limits)
        self._entries[query] = checked
        self._bytes += len(query)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            old, _ = self._entries.popitem(last=False)
            self._bytes -= len(old)
        return checked


def check_query(query: str, limits: GraphQLLimits) -> Checked:
    """Parse and measure ``query`` (its size first); never raises."""
    try:
        document = parse_query(query, limits)
    except GraphQLError as exc:
        return Checked(document=None, parse_error=exc)
    return Checked(document=document, cost=measure(document))


def parse_query(query: str, limits: GraphQLLimits) -> DocumentNode:
    """Parse ``query`` within the size and token limits; a refusal raises a coded error."""
    if len(query) > limits.max_query_bytes or len(query.encode()) > limits.max_query_bytes:
        raise coded(
            f"the query text is larger than {limits.max_query_bytes} bytes "
            "(GraphQLLimits.max_query_bytes): send documents as variables",
            "QUERY_TOO_LARGE",
        )
    try:
        return parse(query, max_tokens=limits.max_tokens)
    except GraphQLError as exc:
        code = "GRAPHQL_PARSE_FAILED"
        if "tokens. Parsing aborted" in exc.message:
            code = "TOKEN_LIMIT_EXCEEDED"
        elif "nested too deeply" in exc.message:
            code = "DEPTH_LIMIT_EXCEEDED"
        raise GraphQLError(
            exc.message, source=exc.source, positions=exc.positions, extensions={"code": code}
        ) from None
    except RecursionError:
        raise coded("the query nests too deeply to parse", "DEPTH_LIMIT_EXCEEDED") from None


def _fresh(error: GraphQLError) -> GraphQLError:
    """A new error like a cached one (an exception object raised again would pile up
    tracebacks)."""
    return GraphQLError(
        error.message, source=error.source, positions=error.positions, extensions=error.extensions
    )


def _validate(context: Any, document: DocumentNode) -> list[GraphQLError]:
    errors = validate_document(context.schema._schema, document, tuple(context.validation_rules))
    for error in errors:
        error.extensions = {"code": "GRAPHQL_VALIDATION_FAILED", **(error.extensions or {})}
    return errors


class QueryGuard(SchemaExtension):
    """Parses, measures, counts and validates each operation within ``limits``."""

    def __init__(
        self,
        *,
        limits: GraphQLLimits,
        cache: QueryCache,
        authorize: Callable[[Any, list[str]], GraphQLError | None] | None = None,
        tarpit: Tarpit | None = None,
        persisted: PersistedOperations | None = None,
    ) -> None:
        super().__init__()
        self.limits = limits
        self.cache = cache
        self.authorize = authorize
        """Given the request's context and the endpoints its operation names, the refusal
        of a caller who lacks a scope, or None."""
        self.tarpit = tarpit
        self.persisted = persisted
        """Persisted operations: the text of a hash, the safelist, APQ registration."""
        self.register: str | None = None
        self.held_back: GraphQLError | None = None
        self.held = False
        self.checked: Checked | None = None

    async def on_operation(self) -> AsyncIterator[None]:
        # HTTP requests wait their turn before their body is read (TarpitGate); the operations
        # of a WebSocket connection wait here, each in turn.
        request = _request(self.execution_context.context)
        if self.tarpit is not None and request is not None and request.scope["type"] == "websocket":
            wait = self.tarpit.admit(_host(request))
            if wait is None:  # answered as the parse step's error (as a refusal must be)
                self.held_back = coded(
                    "too many of this client's queries were refused: retry later",
                    "TOO_MANY_REFUSALS",
                )
            elif wait:
                self.held = True
                await asyncio.sleep(wait)
        if self.held_back is None and self.persisted is not None:
            self._resolve(self.persisted)
        yield

    def _resolve(self, persisted: PersistedOperations) -> None:
        """The text of a persisted operation, or its refusal (raised by the parse step, before
        any parsing)."""
        context = self.execution_context
        request = _request(context.context)
        if (context.operation_extensions or {}).get("persistedQuery") is not None and hasattr(
            request, "state"
        ):
            request.state.meshflow_persisted = True  # its GET answer may be cached
        try:
            resolved = persisted.resolve(context.query, context.operation_extensions)
        except GraphQLError as refusal:
            if refusal.extensions and refusal.extensions.get("code") not in PROTOCOL_STEPS:
                self._strike()
            self.held_back = refusal
            if not context.query:  # else Strawberry would refuse a missing query first
                context.graphql_document = _NOTHING
            return
        context.query = resolved.query
        self.register = resolved.register

    def _strike(self) -> None:
        """Count a refusal, unless the request already took its turn waiting for it."""
        request = _request(self.execution_context.context)
        if self.tarpit is None or self.held:
            return
        if request is not None and request.scope.get("state", {}).get(HELD):
            return
        self.tarpit.strike(_host(request))

    def on_parse(self) -> Iterator[None]:
        if self.held_back is not None:
            raise self.held_back
        context = self.execution_context
        if context.graphql_document is None and context.query is not None:
            self.checked = self.cache.get(context.query, self.limits)
            if self.checked.parse_error is not None:
                self._strike()
                raise _fresh(self.checked.parse_error)
            context.graphql_document = self.checked.document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        assert document is not None
        checked = self.checked
        if checked is None or checked.document is not document:  # not parsed by the guard
            checked = Checked(document=document, cost=measure(document))
        refusal = check_cost(checked.cost, self.limits) or _unnamed_choice(context, document)
        if refusal is None:
            counted = count_documents(document, context.operation_name, context.variables)
            refusal = check_documents(*counted, self.limits) or check_variable_uses(
                document, context.operation_name, context.variables
            )
        if refusal is not None:
            self._strike()
        elif self.authorize is not None:
            # Before the variables are coerced: a caller without the scope of the endpoint
            # it names costs no conversion of its documents.
            named = endpoints(document, context.operation_name, context.variables)
            refusal = self.authorize(context.context, named)
        if refusal is not None:
            context.pre_execution_errors = [refusal]
        else:
            if checked.errors is None:
                checked.errors = _validate(context, document)
            if checked.errors:
                self._strike()
            elif self.register is not None and self.persisted is not None and context.query:
                self.persisted.register(self.register, context.query)
            context.pre_execution_errors = checked.errors
        yield


_NOTHING = parse("{ __typename }")
"""Stands for the document of a refused persisted operation that came without a text."""


def _unnamed_choice(context: Any, document: DocumentNode) -> GraphQLError | None:
    """The refusal of a document of several operations without ``operationName`` (the
    GraphQL spec's request error; Strawberry would run the first)."""
    # Strawberry keeps what the request named privately; without that attribute, no check.
    if getattr(context, "_provided_operation_name", "") is not None:
        return None
    operations = sum(isinstance(d, OperationDefinitionNode) for d in document.definitions)
    if operations < 2:
        return None
    return coded(
        f"the document holds {operations} operations: say which to run with operationName",
        "BAD_REQUEST",
    )


def _request(context: Any) -> Any:
    return context.get("request") if isinstance(context, dict) else None


def _host(request: Any) -> str | None:
    client = getattr(request, "client", None)
    return client.host if client is not None else None
