"""What an Executor class tells of its endpoints: the answer of the ``Endpoints`` RPC (names,
read-only flags, typed parameters, typed documents), from which the gateway builds its
GraphQL query fields and types.

The runtime answers it for a served executor; ``meshflow graphql schema`` reads it from the
classes of a Flow YAML without starting anything.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshflow.executor.doctypes import describe_doc_type
from meshflow.executor.executor import EndpointMethod
from meshflow.executor.parameters import describe as describe_params
from meshflow.proto.v1 import services_pb2


def describe_endpoints(
    name: str, endpoints: Mapping[str, EndpointMethod]
) -> services_pb2.EndpointsResponse:
    """The endpoints of the executor ``name`` (an Executor class's ``endpoints``), sorted by
    name, with their read-only flag and parameters."""
    return services_pb2.EndpointsResponse(
        executor=name,
        endpoints=[
            services_pb2.Endpoint(
                name=e.name,
                method=e.method,
                read_only=e.read_only,
                parameters=[
                    services_pb2.Parameter(**p)
                    for p in (describe_params(e.params) if e.params else [])
                ],
                doc=describe_doc_type(e.doc) if e.doc else None,
                returns=describe_doc_type(e.returns) if e.returns else None,
            )
            for e in sorted(endpoints.values(), key=lambda e: e.name)
        ],
    )
