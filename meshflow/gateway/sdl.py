"""The gateway's GraphQL schema as an artifact: its SDL for a Flow, without starting it.

The running gateway adds a query field for each read-only endpoint as its executors tell of
them (the ``Endpoints`` RPC); offline, the same answers come from the Executor classes the
Flow's deployments name (:func:`~meshflow.executor.describe.describe_endpoints`), so the SDL
printed here is the schema the gateway serves once every deployment answered: with the
named types of typed documents, and the federation directives when federation is on.
"""

from __future__ import annotations

from meshflow.executor.describe import describe_endpoints
from meshflow.gateway.doctypes import check_entities, typed_documents
from meshflow.gateway.graphql import read_only_endpoints
from meshflow.gateway.http import typed_schema
from meshflow.spec.flow import FlowSpec


def schema_sdl(spec: FlowSpec) -> str:
    """The SDL of the GraphQL schema the gateway of ``spec`` serves (its deployments'
    classes imported, as the Flow builder does)."""
    answers = [describe_endpoints(d.name, d.executor_class.endpoints) for d in spec.deployments]
    # typed documents that conflict are a ConfigError here, as when the Flow starts
    key = (read_only_endpoints(answers), typed_documents(answers))
    if spec.federation.enabled:
        check_entities(key[1], spec.federation.entities)
    schema = typed_schema(spec.graphql_limits, key, federation=spec.federation)
    return schema.as_str() + "\n"
