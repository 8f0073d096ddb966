"""``meshflow graphql schema FLOW.yml``: print the SDL of a Flow's GraphQL schema, without
starting the Flow (for code generators and schema checks in CI)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from meshflow.errors import ConfigError


def add_graphql_parser(sub: Any) -> None:
    graphql = sub.add_parser("graphql", help="the GraphQL API of a Flow, offline")
    what = graphql.add_subparsers(dest="graphql_command", required=True)
    schema = what.add_parser(
        "schema", help="print the SDL of the gateway's schema (imports the executors' classes)"
    )
    schema.add_argument("config", help="path of the Flow YAML")
    schema.add_argument("--out", help="write the SDL to this file instead of standard output")


def _graphql(args: argparse.Namespace) -> int:
    # lazy: the Flow builder, Strawberry and the executors' classes load only for this command
    from meshflow.flow.config import load_flow
    from meshflow.gateway.sdl import schema_sdl

    try:
        spec = load_flow(args.config).spec
    except OSError as exc:
        raise ConfigError(f"cannot read the Flow YAML {args.config!r}: {exc.strerror}") from None
    sdl = schema_sdl(spec)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(sdl)
    else:
        sys.stdout.write(sdl)
    return 0
