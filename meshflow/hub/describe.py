"""Run inside a hub executor's environment: print the endpoints of its class as JSON.

``python -I -m meshflow.hub.describe package.module:Class`` (what ``meshflow hub show``
runs): the class is imported where its requirements are installed, never in the Flow's
environment.
"""

from __future__ import annotations

import json
import sys

from google.protobuf.json_format import MessageToDict

from meshflow.executor.describe import describe_endpoints
from meshflow.executor.loader import load_class


def main(argv: list[str]) -> int:
    cls = load_class(argv[0])
    answer = describe_endpoints(cls.__name__, cls.endpoints)
    print(json.dumps(MessageToDict(answer, preserving_proto_field_name=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
