"""Exports carry a Flow's persisted queries to the gateway's container: the manifest is a
file of the image (inside the build context), named by its path there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshflow import ConfigError
from meshflow.cli import make_parser
from meshflow.deploy.common import gateway_command, image_context
from meshflow.deploy.images import APP, BuildContext
from meshflow.spec.flow import FlowSpec
from meshflow.spec.launch import GatewayLaunch
from meshflow.spec.persisted import PersistedQueries, sha256_hex


def _manifest(path: Path) -> str:
    body = "{ __typename }"
    operation = {"id": sha256_hex(body), "body": body, "name": "T", "type": "query"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"format": "apollo-persisted-query-manifest", "version": 1, "operations": [operation]}
        )
    )
    return str(path)


def test_the_gateway_container_reads_the_manifest_from_the_image(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "ops" / "persisted-queries.json")
    spec = FlowSpec.build(
        persisted_queries={"mode": "safelist", "manifest": manifest, "cache_control": "max-age=5"}
    )
    argv = gateway_command(spec, [], context=image_context(spec, str(tmp_path)))
    launch = GatewayLaunch.from_args(make_parser().parse_args(argv))
    assert launch.persisted_queries == PersistedQueries(
        mode="safelist", manifest=f"{APP}/ops/persisted-queries.json", cache_control="max-age=5"
    )


def test_a_manifest_outside_the_build_context_is_refused(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "elsewhere" / "persisted-queries.json")
    spec = FlowSpec.build(persisted_queries={"mode": "safelist", "manifest": manifest})
    (tmp_path / "project").mkdir()
    with pytest.raises(ConfigError, match=r"persisted_queries\.manifest"):
        image_context(spec, str(tmp_path / "project"))
    with pytest.raises(ConfigError, match=r"persisted_queries\.manifest"):
        gateway_command(spec, [], context=BuildContext.at(str(tmp_path / "project")))


def test_a_bad_manifest_is_refused_when_the_flow_is_built(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "apollo-persisted-query-manifest", "version": 2}')
    with pytest.raises(ConfigError, match="only version 1"):
        FlowSpec.build(persisted_queries={"mode": "safelist", "manifest": str(bad)})
