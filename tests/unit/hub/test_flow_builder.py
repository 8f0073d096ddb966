from __future__ import annotations

import pytest

from meshflow import Flow
from meshflow.errors import ConfigError
from meshflow.hub.prepare import hub_deployments


def test_a_hub_reference_is_checked_when_added_and_resolved_at_start() -> None:
    f = Flow().add(name="enc", uses="hub://image-encoder>=1.2,<2").add(name="plain", uses="hub://x")
    spec = f._spec
    assert hub_deployments(spec) == {"enc": "hub://image-encoder>=1.2,<2", "plain": "hub://x"}
    assert spec.deployment("enc").executor_class.__name__ == "HubExecutor[image-encoder]"


def test_a_bad_hub_reference_fails_when_added() -> None:
    with pytest.raises(ConfigError, match="not a version specifier"):
        Flow().add(name="enc", uses="hub://image-encoder=>1")


def test_dynamic_batching_of_a_hub_executor_is_taken_as_given() -> None:
    f = Flow().add(
        name="enc", uses="hub://enc@1.0.0", uses_dynamic_batching={"/encode": {"timeout": 5}}
    )
    assert set(f._spec.deployment("enc").uses_dynamic_batching) == {"/encode"}
