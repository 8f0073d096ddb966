"""``meshflow graphql schema FLOW.yml`` from a user's project folder: the SDL of the
gateway's schema, without starting the Flow; bad input is one line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from graphql import (
    GraphQLObjectType,
    build_client_schema,
    build_schema,
    get_introspection_query,
    lexicographic_sort_schema,
    print_schema,
)

from meshflow import Flow
from meshflow.gateway.sdl import schema_sdl

StartFlow = Callable[[Flow], Flow]

ROOT = Path(__file__).resolve().parents[2]
EXECUTOR = """
from dataclasses import dataclass

from meshflow import DocumentArray, Executor, requests


@dataclass
class Filters:
    category: str | None = None
    limit: int = 10
    colours: list[str] | None = None


class Products(Executor):
    @requests(on="/products/search", read_only=True)
    def search(self, docs: DocumentArray, parameters: Filters, **kwargs):
        pass

    @requests(on="/index")
    def index(self, docs: DocumentArray, **kwargs):
        pass
"""
FLOW = """\
jtype: Flow
name: shop
executors:
  - uses: my_pkg.products:Products
    name: products
  - uses: my_pkg.products:Products
    name: again
"""


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The meshflow under test (this checkout), and nothing of the project on PYTHONPATH:
    # the command finds the user's package from its working folder.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "meshflow", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "my_pkg").mkdir(parents=True)
    (root / "my_pkg" / "__init__.py").write_text("")
    (root / "my_pkg" / "products.py").write_text(EXECUTOR)
    (root / "flow.yml").write_text(FLOW)
    return root


def test_the_sdl_parses_back_with_the_read_only_endpoints_as_query_fields(project: Path) -> None:
    done = run(project, "graphql", "schema", "flow.yml")
    assert done.returncode == 0, done.stderr
    schema = build_schema(done.stdout)
    query = schema.query_type
    assert query is not None and set(query.fields) == {"flow", "productsSearch"}
    search = query.fields["productsSearch"]
    assert set(search.args) == {"docs", "targetExecutor", "category", "limit", "colours"}
    assert str(search.args["limit"].type) == "Int" and str(search.args["colours"].type) == (
        "[String!]"
    )
    assert str(search.type) == "Response!"
    mutation, subscription = schema.mutation_type, schema.subscription_type
    assert mutation is not None and "post" in mutation.fields
    assert subscription is not None and "stream" in subscription.fields
    document = schema.get_type("Document")
    assert isinstance(document, GraphQLObjectType)
    assert {"id", "text", "embedding", "matches", "tags"} <= set(document.fields)


def test_the_sdl_goes_to_a_file_with_out(project: Path) -> None:
    done = run(project, "graphql", "schema", "flow.yml", "--out", "schema.graphql")
    assert done.returncode == 0 and done.stdout == ""
    assert build_schema((project / "schema.graphql").read_text()).query_type is not None


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (None, "No such file"),
        ("executors: [\n", "invalid YAML"),
        ("executors:\n  - uses: my_pkg.products:Nope\n", "has no attribute 'Nope'"),
        ("executors:\n  - uses: nowhere:Nope\n", "no module named 'nowhere'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(project: Path, yaml: str | None, message: str) -> None:
    if yaml is not None:
        (project / "bad.yml").write_text(yaml)
    done = run(project, "graphql", "schema", "bad.yml")
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.mesh("direct")
def test_the_offline_sdl_is_the_schema_the_running_gateway_serves(start_flow: StartFlow) -> None:
    f = start_flow(Flow().add(uses="executors:Catalog", name="catalog").add(uses="executors:Tag"))
    search = '{ search(docs: [{id: "q"}], limit: 1) { requestId } }'
    assert "errors" not in httpx.post(f.graphql_url, json={"query": search}, timeout=30).json()
    introspection = httpx.post(
        f.graphql_url,
        json={"query": get_introspection_query(descriptions=True, specified_by_url=True)},
        timeout=30,
    ).json()
    served = lexicographic_sort_schema(build_client_schema(introspection["data"]))
    offline = lexicographic_sort_schema(build_schema(schema_sdl(f.spec)))
    assert print_schema(offline) == print_schema(served)
