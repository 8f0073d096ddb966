"""Documents, the data that flows through meshflow, and arrays of them.

``meshflow.document.proto`` converts them to and from their protobuf messages.
"""

from __future__ import annotations

from meshflow.document.array import DocumentArray, score_is_ascending
from meshflow.document.document import Document

__all__ = ["Document", "DocumentArray", "score_is_ascending"]
