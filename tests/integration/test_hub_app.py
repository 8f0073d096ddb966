"""The shop-the-look app from hub:// references: its executors published as hub packages
(``python -m services.hub``) and run each in its own environment.

A lighter variant of the app's Flow: the indexer (2 shards, the app's polling and spaces) and
the ranker, taken from the hub; the encoders' work (an image and a text embedding per
product, in the app's chunk layout) is done by the test, because their models (torch) cannot
be installed into fresh environments here. The indexer's environment installs faiss-cpu and
numpy from uv's default index: the test is skipped when that index cannot be reached.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest
import yaml
from hubkit import UV_DEFAULT, hub_environ

from meshflow import Document, DocumentArray, Flow
from meshflow.hub.errors import EnvironmentBuildError
from meshflow.hub.index import FolderHub
from services.hub import build_wheels
from services.modality import put_embedding

pytestmark = pytest.mark.timeout(600)
APP_FLOW = os.path.join(os.path.dirname(__file__), "..", "..", "services", "shop_the_look")
SPACES = {"image": 1280, "text": 384}


@pytest.fixture(scope="module")
def app_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = str(tmp_path_factory.mktemp("hubapp"))
    hub = FolderHub(os.path.join(root, "hub"))
    for wheel in build_wheels(("vector_indexer", "ranker"), os.path.join(root, "wheels")):
        hub.push(wheel)
    with hub_environ(
        hub.location, os.path.join(root, "cache"), os.path.join(root, "uv"), UV_DEFAULT
    ):
        yield root


def light_flow(folder: str) -> str:
    """The app's flow.yml with its indexer and ranker from the hub and no encoders."""
    with open(os.path.join(APP_FLOW, "flow.yml")) as fh:
        app = yaml.safe_load(fh)
    executors = {e["name"]: e for e in app["executors"]}
    indexer = {**executors["indexer"], "uses": "hub://shop-vector-indexer@1.0.0"}
    indexer["needs"] = "gateway"
    ranker = {**executors["ranker"], "uses": "hub://shop-ranker>=1,<2"}
    flow = {
        "jtype": "Flow",
        "name": "shop-the-look-hub",
        "with": {"mesh": "envoy", "workspace": os.path.join(folder, "ws")},
        "executors": [indexer, ranker],
    }
    path = os.path.join(folder, "flow.yml")
    with open(path, "w") as fh:
        yaml.safe_dump(flow, fh)
    return path


def product(i: int, rng: np.random.Generator) -> Document:
    doc = Document(id=f"p{i}", text=f"product {i}")
    for modality, dim in SPACES.items():
        vector = rng.standard_normal(dim).astype(np.float32)
        put_embedding(doc, vector / np.linalg.norm(vector), modality, "modality")
    return doc


def test_shop_the_look_runs_from_hub_references(app_hub: str, tmp_path: str) -> None:
    path = light_flow(str(tmp_path))
    rng = np.random.default_rng(3)
    catalog = DocumentArray(product(i, rng) for i in range(24))
    try:
        f = Flow.load_config(path)
        f.start()
    except EnvironmentBuildError as exc:
        if "faiss" in str(exc) and ("connect" in str(exc).lower() or "fetch" in str(exc)):
            pytest.skip(f"uv's default index is not reachable: {exc}")
        raise
    try:
        f.post("/index", catalog)
        query = Document(id="q")
        for chunk in catalog[7].chunks:
            put_embedding(query, chunk.embedding, chunk.tags["modality"], "modality")
        found = f.post("/search", DocumentArray([query]), parameters={"limit": 3})
        hubs = {d["name"]: d["hub"] for d in f.describe()["deployments"]}
    finally:
        f.close()
    assert found[0].matches[0].id == "p7"
    assert "fused" in found[0].matches[0].scores
    assert hubs["indexer"]["name"] == "shop-vector-indexer"
    assert hubs["ranker"]["version"] == "1.0.0"
    assert hubs["indexer"]["environment"] != hubs["ranker"]["environment"]
