"""Loading an executor class by reference: the errors say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshflow.errors import ConfigError
from meshflow.executor.loader import load_class


def test_a_folder_hidden_by_a_package_of_the_same_name_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project's ``json/`` folder without ``__init__.py``: Python imports the installed
    package of that name and never looks into the folder; the error says so."""
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "myexec.py").write_text(
        "from meshflow import Executor\nclass Foo(Executor):\n    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_class("json.myexec:Foo")
    message = str(refused.value)
    assert "no module named 'json.myexec'" in message
    assert f"hides the folder {tmp_path / 'json'}" in message
    assert "__init__.py" in message


def test_a_plain_misspelling_gets_no_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        load_class("json.nope:Foo")
    assert "hides" not in str(refused.value)
