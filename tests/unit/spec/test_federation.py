"""The federation option: checked when it is built, from a bool or a mapping."""

from __future__ import annotations

import pytest

from meshflow import ConfigError, Federation
from meshflow.spec.flow import FlowSpec


def test_yaml_forms_and_endpoint_names() -> None:
    assert FlowSpec.build(federation=True).federation == Federation(enabled=True)
    spec = FlowSpec.build(federation={"enabled": True, "entities": {"Product": "products"}})
    assert spec.federation.entities == {"Product": "/products"}
    assert FlowSpec.build().federation == Federation()
    assert FlowSpec.build().options() == {}  # off: nothing written to YAML


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"entities": {"Product": "/p"}}, "federation.enabled is false"),
        ({"enabled": True, "entities": {"not a name": "/p"}}, "not a GraphQL type name"),
        ({"enabled": True, "entities": {"Product": "/"}}, "is not an endpoint"),
        ({"enabled": "yes"}, "must be true or false"),
        ({"enabled": True, "keys": ["id"]}, "unexpected keyword argument 'keys'"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FlowSpec.build(federation=options)
