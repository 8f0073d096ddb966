from __future__ import annotations

import os

import meshflow
from meshflow.hub.layer import runtime_layer, runtime_links


def test_the_runtime_layer_holds_meshflow_and_its_dependencies_only() -> None:
    links = runtime_links()
    assert links["meshflow"] == os.path.dirname(os.path.abspath(meshflow.__file__))
    for needed in ("grpc", "google", "numpy", "yaml", "cloudpickle"):
        assert needed in links, needed
    # installed in the Flow's environment, but not needed by meshflow: kept out
    for foreign in ("pytest", "_pytest", "faiss", "selenium"):
        assert foreign not in links, foreign


def test_the_layer_is_made_once_and_links_resolve(tmp_path: str) -> None:
    first = runtime_layer(str(tmp_path))
    assert runtime_layer(str(tmp_path)) == first
    assert os.path.isfile(os.path.join(first, "meshflow", "__init__.py"))
    assert os.path.isdir(os.path.join(first, "grpc"))
