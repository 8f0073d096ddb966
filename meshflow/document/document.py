"""The :class:`Document`: one piece of data (text, bytes, a tensor) and what was computed on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    # lazy: array.py imports this module (Documents and DocumentArrays nest in each other)
    from meshflow.document.array import DocumentArray

_REPR_WIDTH = 40


class Document:
    """One piece of data flowing through a Flow, plus everything computed on it.

    Every field is optional except ``id``, which defaults to a fresh ``uuid4().hex``.

    Args:
        id: Unique identifier; a new random one when omitted.
        text: Text content.
        blob: Raw bytes content (an image file, audio, ...).
        tensor: Content as an array of any dtype and shape; lists are converted with
            ``numpy.asarray``.
        embedding: The vector representing the content, typically 1-d float.
        uri: Where the content comes from.
        mime_type: Media type of the content, e.g. ``"image/png"``.
        tags: JSON-like metadata (str keys; str, number, bool, None, list and dict values).
            The mapping is copied.
        scores: Named scores, e.g. ``{"cosine": 0.93}`` on a match. The mapping is copied.
        matches: Documents found for this one by a search (see ``DocumentArray.match``).
        chunks: Parts of this document (sentences of a text, crops of an image, ...).
            For ``matches`` and ``chunks``, a ``DocumentArray`` is kept as is; any other
            iterable is collected into a new one.
        parent_id: ``id`` of the document this one is a chunk of.

    Example::

        doc = Document(text="hello", embedding=[0.1, 0.2], tags={"lang": "en"})
        doc.chunks.append(Document(text="hel", parent_id=doc.id))
    """

    __slots__ = (
        "_chunks",
        "_embedding",
        "_matches",
        "_tensor",
        "_wire",
        "blob",
        "id",
        "mime_type",
        "parent_id",
        "scores",
        "tags",
        "text",
        "uri",
    )

    id: str
    parent_id: str
    text: str
    blob: bytes
    uri: str
    mime_type: str
    tags: dict[str, Any]
    scores: dict[str, float]
    # matches/chunks are created on first access: most documents never have any.
    _matches: DocumentArray | None
    _chunks: DocumentArray | None
    _tensor: npt.NDArray[Any] | None
    _embedding: npt.NDArray[Any] | None
    # Set by meshflow.document.proto when decoded from a request: what it was on the wire.
    _wire: tuple[Any, ...] | None

    def __init__(
        self,
        *,
        id: str | None = None,
        text: str = "",
        blob: bytes = b"",
        tensor: npt.ArrayLike | None = None,
        embedding: npt.ArrayLike | None = None,
        uri: str = "",
        mime_type: str = "",
        tags: Mapping[str, Any] | None = None,
        scores: Mapping[str, float] | None = None,
        matches: Iterable[Document] | None = None,
        chunks: Iterable[Document] | None = None,
        parent_id: str = "",
    ) -> None:
        self.id = uuid.uuid4().hex if id is None else id
        self.parent_id = parent_id
        self.text = text
        self.blob = blob
        self.uri = uri
        self.mime_type = mime_type
        self.tags = dict(tags) if tags else {}
        self.scores = dict(scores) if scores else {}
        self._tensor = None if tensor is None else np.asarray(tensor)
        self._embedding = None if embedding is None else np.asarray(embedding)
        self._matches = None if matches is None else _as_array(matches)
        self._chunks = None if chunks is None else _as_array(chunks)
        self._wire = None

    @property
    def tensor(self) -> npt.NDArray[Any] | None:
        """The content as an array, or None."""
        return self._tensor

    @tensor.setter
    def tensor(self, value: npt.ArrayLike | None) -> None:
        self._tensor = None if value is None else np.asarray(value)

    @property
    def embedding(self) -> npt.NDArray[Any] | None:
        """The embedding vector, or None."""
        return self._embedding

    @embedding.setter
    def embedding(self, value: npt.ArrayLike | None) -> None:
        self._embedding = None if value is None else np.asarray(value)

    @property
    def matches(self) -> DocumentArray:
        """Documents found for this one by a search, best first."""
        if self._matches is None:
            # lazy: array.py imports this module (Documents and DocumentArrays nest in each other)
            from meshflow.document.array import DocumentArray

            self._matches = DocumentArray()
        return self._matches

    @matches.setter
    def matches(self, value: Iterable[Document] | None) -> None:
        self._matches = None if value is None else _as_array(value)

    @property
    def chunks(self) -> DocumentArray:
        """Parts of this document."""
        if self._chunks is None:
            # lazy: array.py imports this module (Documents and DocumentArrays nest in each other)
            from meshflow.document.array import DocumentArray

            self._chunks = DocumentArray()
        return self._chunks

    @chunks.setter
    def chunks(self, value: Iterable[Document] | None) -> None:
        self._chunks = None if value is None else _as_array(value)

    def copy(self) -> Document:
        """Return a shallow copy with the same ``id``.

        ``tags``, ``scores``, ``matches`` and ``chunks`` are new containers holding the same
        values; arrays and nested Documents are shared, not copied.
        """
        return self._clone(with_matches=True)

    def _clone(self, *, with_matches: bool) -> Document:
        new = Document.__new__(Document)
        new.id = self.id
        new.parent_id = self.parent_id
        new.text = self.text
        new.blob = self.blob
        new.uri = self.uri
        new.mime_type = self.mime_type
        new.tags = dict(self.tags)
        new.scores = dict(self.scores)
        new._tensor = self._tensor
        new._embedding = self._embedding
        new._chunks = self._chunks[:] if self._chunks else None
        new._matches = self._matches[:] if with_matches and self._matches else None
        new._wire = None
        return new

    def __eq__(self, other: object) -> bool:
        """Compare every field; arrays with ``numpy.array_equal`` (values and shape, not dtype)."""
        if self is other:
            return True
        if not isinstance(other, Document):
            return NotImplemented
        return (
            self.id == other.id
            and self.parent_id == other.parent_id
            and self.text == other.text
            and self.blob == other.blob
            and self.uri == other.uri
            and self.mime_type == other.mime_type
            and self.tags == other.tags
            and self.scores == other.scores
            and _arrays_equal(self._tensor, other._tensor)
            and _arrays_equal(self._embedding, other._embedding)
            and _nested_equal(self._matches, other._matches)
            and _nested_equal(self._chunks, other._chunks)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def __repr__(self) -> str:
        parts = [f"id={self.id!r}"]
        for name in ("parent_id", "text", "uri", "mime_type"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={_short(repr(value))}")
        if self.blob:
            parts.append(f"blob=<{len(self.blob)} bytes>")
        for name, array in (("tensor", self._tensor), ("embedding", self._embedding)):
            if array is not None:
                parts.append(f"{name}=<{array.dtype} {array.shape}>")
        if self.tags:
            parts.append(f"tags={_short(repr(self.tags))}")
        if self.scores:
            parts.append(f"scores={_short(repr(self.scores))}")
        for name, docs in (("matches", self._matches), ("chunks", self._chunks)):
            if docs:
                parts.append(f"{name}=<{len(docs)} documents>")
        return f"<Document {' '.join(parts)}>"


def _as_array(docs: Iterable[Document]) -> DocumentArray:
    # lazy: array.py imports this module (Documents and DocumentArrays nest in each other)
    from meshflow.document.array import DocumentArray

    return docs if isinstance(docs, DocumentArray) else DocumentArray(docs)


def _arrays_equal(a: npt.NDArray[Any] | None, b: npt.NDArray[Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or bool(np.array_equal(a, b))


def _nested_equal(a: DocumentArray | None, b: DocumentArray | None) -> bool:
    # A never-touched (None) container equals an empty one.
    if not a or not b:
        return not a and not b
    return a == b


def _short(text: str) -> str:
    return text if len(text) <= _REPR_WIDTH else text[: _REPR_WIDTH - 1] + "…"
