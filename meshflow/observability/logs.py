"""Logging of the meshflow processes: text or JSON lines, with the trace id when tracing.

``MESHFLOW_LOG_LEVEL`` (default INFO) and ``MESHFLOW_LOG_FORMAT`` (``text`` or ``json``; a
Flow passes its ``log_format``) choose. The gateway writes one ``meshflow.access`` line per
request: request id, door, endpoint, status, duration and trace id; in JSON each is a field.
"""

from __future__ import annotations

import logging
import os

from meshflow.observability.tracing import current_trace_id

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _TraceIds(logging.Filter):
    """Adds ``trace_id`` / ``span_id`` of the current span to records that have none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            trace_id = current_trace_id()
            if trace_id is not None:
                record.trace_id = trace_id
        return True


class _Text(logging.Formatter):
    """The text format, with `` trace=<id>`` at the end of lines logged inside a trace."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        return f"{line} trace={trace_id}" if trace_id else line


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Set up the root logger of a meshflow process (the CLI calls this once)."""
    level = (level or os.environ.get("MESHFLOW_LOG_LEVEL") or "INFO").upper()
    fmt = fmt or os.environ.get("MESHFLOW_LOG_FORMAT") or "text"
    handler = logging.StreamHandler()
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter  # lazy: only for JSON logs

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(_Text(TEXT))
    handler.addFilter(_TraceIds())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
