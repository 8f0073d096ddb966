"""The text log format: logging's own line, the time's seconds part written once per second."""

from __future__ import annotations

import logging

from meshflow.observability.logs import TEXT, _Text


def record(created: float, trace_id: str | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("meshflow.access", logging.INFO, __file__, 1, "r%s ok", (7,), None)
    rec.created, rec.msecs = created, (created - int(created)) * 1000
    if trace_id is not None:
        rec.trace_id = trace_id
    return rec


def test_lines_are_loggings_own_within_a_second_and_across_seconds() -> None:
    ours, plain = _Text(TEXT), logging.Formatter(TEXT)
    for created in (1_764_964_800.001, 1_764_964_800.999, 1_764_964_801.5, 1_764_964_800.25):
        assert ours.format(record(created)) == plain.format(record(created))


def test_a_date_format_and_the_trace_id_are_kept() -> None:
    dated = _Text(TEXT, datefmt="%H:%M:%S")
    assert dated.format(record(1_764_964_800.5)) == logging.Formatter(
        TEXT, datefmt="%H:%M:%S"
    ).format(record(1_764_964_800.5))
    assert _Text(TEXT).format(record(1_764_964_800.5, "ab" * 16)).endswith(f" trace={'ab' * 16}")
