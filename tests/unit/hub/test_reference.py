from __future__ import annotations

import pytest

from meshflow.errors import ConfigError
from meshflow.hub.reference import HubRef, is_hub_ref


def test_at_version_pins_one_version() -> None:
    ref = HubRef.parse("hub://Image_Encoder@1.2.0")
    assert ref.name == "image-encoder"
    assert ref.pinned() == "1.2.0"
    assert ref.sha256 is None


def test_specifier_allows_a_range() -> None:
    ref = HubRef.parse("hub://image-encoder>=1.2,<2")
    assert ref.pinned() is None
    assert list(ref.specifier.filter(["1.1", "1.2", "1.9", "2.0"])) == ["1.2", "1.9"]


def test_bare_name_allows_any_version() -> None:
    assert str(HubRef.parse("hub://echo").specifier) == ""


def test_lock_fragment_pins_the_content() -> None:
    ref = HubRef.parse("hub://echo@1.0.0#sha256=" + "ab" * 32)
    assert ref.sha256 == "ab" * 32 and ref.pinned() == "1.0.0"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hub://", "no executor name"),
        ("hub://echo@one", "not a version"),
        ("hub://echo>>1", "not a version specifier"),
        ("hub://echo@1#md5=00", "sha256="),
    ],
)
def test_bad_references_say_how_to_write_them(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        HubRef.parse(text)


def test_only_hub_scheme_strings_are_hub_references() -> None:
    assert is_hub_ref("hub://x@1")
    assert not is_hub_ref("services.ranker:Ranker")
    assert not is_hub_ref(object)
