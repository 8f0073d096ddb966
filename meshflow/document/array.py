"""The :class:`DocumentArray`: a list of Documents, indexed by position or id, with bulk access."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, MutableSequence, Sequence, Sized
from typing import TYPE_CHECKING, Any, Final, Literal, overload

import numpy as np
import numpy.typing as npt

from meshflow.document.document import Document
from meshflow.proto.v1 import document_pb2

if TYPE_CHECKING:
    # lazy: columnar.py imports this module (it builds lazy DocumentArrays)
    from meshflow.document.columnar import Columns

Metric = Literal["cosine", "euclidean", "dot"]

#: The metrics ``DocumentArray.match`` computes.
METRICS: Final[tuple[str, ...]] = ("cosine", "euclidean", "dot")

#: Score names for which a lower value is a better match (distances). Every other score is
#: a similarity: higher is better.
LOWER_IS_BETTER: Final[frozenset[str]] = frozenset({"euclidean"})


def score_is_ascending(name: str) -> bool:
    """Tell whether matches scored by ``name`` sort best-first in ascending order.

    True for distances (``"euclidean"``), False for similarities (``"cosine"``, ``"dot"``)
    and any unknown score name.

    Example::

        doc.matches = sorted(
            doc.matches,
            key=lambda m: m.scores[name],
            reverse=not score_is_ascending(name),
        )
    """
    return name in LOWER_IS_BETTER


class DocumentArray(MutableSequence[Document]):
    """A mutable list of :class:`Document` objects.

    Index it by position (``da[0]``, ``da[-1]``), slice (``da[1:3]``, a new DocumentArray
    holding the same Documents) or id (``da["a1b2"]``). Bulk attributes (``ids``, ``texts``,
    ``blobs``, ``embeddings``, ``tensors``) read or write one field of every Document at once.

    Args:
        docs: Documents to hold (an iterable of them, or a single one).

    Example::

        da = DocumentArray(Document(text=t) for t in ["a", "b", "c"])
        da.embeddings = np.random.rand(3, 128)
        da.match(index, metric="cosine", limit=5)
    """

    __slots__ = ("_columns", "_items", "_positions")

    # The Documents; None while a lazy array (see :meth:`_lazy`) has not built them.
    _items: list[Document] | None
    # id -> position, built on the first lookup by id. Ids can change behind our back
    # (``doc.id = ...``), so every hit is verified and a miss rebuilds the map.
    _positions: dict[str, int] | None
    # Where a lazy array's Documents come from (a request's columnar documents): they are
    # built on first use; until then the bulk attributes read and write the columns.
    _columns: Columns | None

    def __init__(self, docs: Iterable[Document] | Document | None = None) -> None:
        self._columns = None
        if docs is None:
            self._items = []
        elif isinstance(docs, Document):
            self._items = [docs]
        else:
            self._items = [_checked(doc) for doc in docs]
        self._positions = None

    @classmethod
    def empty(cls, n: int) -> DocumentArray:
        """Return a DocumentArray of ``n`` new, empty Documents (each with a fresh id)."""
        return cls._wrap([Document() for _ in range(n)])

    @classmethod
    def _wrap(cls, docs: list[Document]) -> DocumentArray:
        # Takes ownership of ``docs`` without checking its items.
        new = cls.__new__(cls)
        new._items = docs
        new._positions = None
        new._columns = None
        return new

    @classmethod
    def _lazy(cls, columns: Columns) -> DocumentArray:
        # Documents built from ``columns`` on first use (meshflow.document.columnar).
        new = cls.__new__(cls)
        new._items = None
        new._positions = None
        new._columns = columns
        return new

    @property
    def _docs(self) -> list[Document]:
        items = self._items
        if items is None:
            assert self._columns is not None
            items = self._items = self._columns.materialize()
        return items

    @property
    def _unbuilt(self) -> Columns | None:
        """The columns of a lazy array whose Documents are not built yet, else None."""
        return self._columns if self._items is None else None

    # -- sequence protocol ------------------------------------------------------------------

    def __len__(self) -> int:
        if self._items is None and self._columns is not None:
            return self._columns.n
        return len(self._docs)

    def __iter__(self) -> Iterator[Document]:
        return iter(self._docs)

    @overload
    def __getitem__(self, key: int) -> Document: ...

    @overload
    def __getitem__(self, key: slice) -> DocumentArray: ...

    @overload
    def __getitem__(self, key: str) -> Document: ...

    def __getitem__(self, key: int | slice | str) -> Document | DocumentArray:
        if isinstance(key, str):
            return self._docs[self._position(key)]
        if isinstance(key, slice):
            return DocumentArray._wrap(self._docs[key])
        return self._docs[self._index(key)]

    @overload
    def __setitem__(self, key: int, value: Document) -> None: ...

    @overload
    def __setitem__(self, key: slice, value: Iterable[Document]) -> None: ...

    @overload
    def __setitem__(self, key: str, value: Document) -> None: ...

    def __setitem__(self, key: int | slice | str, value: Document | Iterable[Document]) -> None:
        if isinstance(key, slice):
            if isinstance(value, Document):
                raise TypeError("can only assign an iterable of Documents to a slice")
            self._docs[key] = [_checked(doc) for doc in value]
        else:
            position = self._position(key) if isinstance(key, str) else self._index(key)
            self._docs[position] = _checked(value)
        self._positions = None

    def __delitem__(self, key: int | slice | str) -> None:
        if isinstance(key, str):
            del self._docs[self._position(key)]
        elif isinstance(key, slice):
            del self._docs[key]
        else:
            del self._docs[self._index(key)]
        self._positions = None

    def __contains__(self, item: object) -> bool:
        """``doc in da`` compares Documents like a list does; ``"some-id" in da`` looks up ids."""
        if isinstance(item, str):
            try:
                self._position(item)
            except KeyError:
                return False
            return True
        return item in self._docs

    def insert(self, index: int, value: Document) -> None:
        """Insert ``value`` before position ``index``."""
        self._docs.insert(index, _checked(value))
        self._positions = None

    def append(self, value: Document) -> None:
        """Add ``value`` at the end."""
        self._docs.append(_checked(value))
        if self._positions is not None:
            self._positions.setdefault(value.id, len(self._docs) - 1)

    def extend(self, values: Iterable[Document]) -> None:
        """Add every Document of ``values`` at the end."""
        if values is self:
            values = list(values)
        start = len(self._docs)
        self._docs.extend(_checked(doc) for doc in values)
        if self._positions is not None:
            for position in range(start, len(self._docs)):
                self._positions.setdefault(self._docs[position].id, position)

    def clear(self) -> None:
        """Remove every Document."""
        self._docs.clear()
        self._positions = None

    def __eq__(self, other: object) -> bool:
        """Equal to another DocumentArray holding equal Documents in the same order."""
        if not isinstance(other, DocumentArray):
            return NotImplemented
        return self._docs == other._docs

    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value

    def __repr__(self) -> str:
        return f"<DocumentArray (length={len(self._docs)})>"

    def _index(self, key: int) -> int:
        try:
            index = operator.index(key)
        except TypeError:
            raise TypeError(
                f"DocumentArray indices must be int, slice or str (an id), not {type(key).__name__}"
            ) from None
        n = len(self._docs)
        if not -n <= index < n:
            raise IndexError(f"DocumentArray index {index} out of range for length {n}")
        return index

    def _position(self, id: str) -> int:
        docs = self._docs
        if self._positions is not None:
            position = self._positions.get(id)
            if position is not None and position < len(docs) and docs[position].id == id:
                return position
        # The cache was missing or stale: rebuild it, keeping the first position of each id.
        positions = {docs[i].id: i for i in range(len(docs) - 1, -1, -1)}
        self._positions = positions
        try:
            return positions[id]
        except KeyError:
            raise KeyError(f"no Document with id {id!r} in this DocumentArray") from None

    # -- bulk attributes --------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """The ``id`` of every Document."""
        columns = self._unbuilt
        if columns is not None:
            ids = columns.strings("ids")
            if all(ids):  # an empty id gets a fresh one when its Document is built
                return ids
        return [doc.id for doc in self._docs]

    @property
    def texts(self) -> list[str]:
        """The ``text`` of every Document; set it from a list of the same length."""
        columns = self._unbuilt
        if columns is not None:
            return columns.strings("texts")
        return [doc.text for doc in self._docs]

    @texts.setter
    def texts(self, values: Sequence[str]) -> None:
        self._check_length(values, "texts")
        columns = self._unbuilt
        if columns is not None:
            columns.set_strings("texts", list(values))
            return
        for doc, text in zip(self._docs, values, strict=True):
            doc.text = text

    @property
    def blobs(self) -> list[bytes]:
        """The ``blob`` of every Document; set it from a list of the same length."""
        columns = self._unbuilt
        if columns is not None:
            return columns.strings("blobs")
        return [doc.blob for doc in self._docs]

    @blobs.setter
    def blobs(self, values: Sequence[bytes]) -> None:
        self._check_length(values, "blobs")
        columns = self._unbuilt
        if columns is not None:
            columns.set_strings("blobs", list(values))
            return
        for doc, blob in zip(self._docs, values, strict=True):
            doc.blob = blob

    @property
    def embeddings(self) -> npt.NDArray[Any] | None:
        """Every ``embedding`` stacked into one ``(n, ...)`` array; None if no Document has one.

        Reading raises ValueError when only some Documents have an embedding, or when their
        shapes differ. Setting takes an array of shape ``(n, ...)``: row ``i`` becomes the
        embedding of Document ``i`` (a view, not a copy). Setting None clears them all.

        For documents received in the columnar layout (see ``docs/wire.md``), reading gives
        the received column itself: a **read-only** view of the request's bytes, no copy
        (``docs.embeddings += 1`` raises; ``docs.embeddings = docs.embeddings + 1`` works).
        """
        column = self._column("embeddings", "_embedding")
        if column is not None:
            return column
        return self._stack("embedding", [doc._embedding for doc in self._docs])

    @embeddings.setter
    def embeddings(self, value: npt.ArrayLike | None) -> None:
        if self._set_column("embeddings", value):
            return
        for doc, row in zip(self._docs, self._rows(value, "embeddings"), strict=True):
            doc._embedding = row

    @property
    def tensors(self) -> npt.NDArray[Any] | None:
        """Every ``tensor`` stacked into one ``(n, ...)`` array; None if no Document has one.

        Same rules as :attr:`embeddings`.
        """
        column = self._column("tensors", "_tensor")
        if column is not None:
            return column
        return self._stack("tensor", [doc._tensor for doc in self._docs])

    @tensors.setter
    def tensors(self, value: npt.ArrayLike | None) -> None:
        if self._set_column("tensors", value):
            return
        for doc, row in zip(self._docs, self._rows(value, "tensors"), strict=True):
            doc._tensor = row

    def _column(self, name: str, attr: str) -> npt.NDArray[Any] | None:
        """The received column ``name``, when every Document still holds its row."""
        columns = self._columns
        if columns is None:
            return None
        matrix = columns.array(name)
        if matrix is None:
            return None
        if self._items is None:
            return matrix
        rows = columns._rows.get(name)
        items = self._items
        if rows is None or len(rows) != len(items):
            return None
        for doc, row in zip(items, rows, strict=True):
            if getattr(doc, attr) is not row:
                return None
        return matrix

    def _set_column(self, name: str, value: npt.ArrayLike | None) -> bool:
        """Set the column ``name`` of a lazy array without building Documents, if it can."""
        columns = self._unbuilt
        if columns is None or columns.has_rest:
            return False
        if value is None:
            columns.set_array(name, None)
            return True
        array = np.asarray(value)
        if array.ndim == 0:
            raise ValueError(f"cannot set {name} from a 0-d array; give shape (n, ...)")
        self._check_length(array, name)
        columns.set_array(name, array)
        return True

    def _check_length(self, values: Sized, name: str) -> None:
        if len(values) != len(self):
            raise ValueError(
                f"cannot set {name} of {len(self)} Documents from {len(values)} values; "
                f"give exactly one per Document"
            )

    def _stack(self, field: str, arrays: list[npt.NDArray[Any] | None]) -> npt.NDArray[Any] | None:
        present = [a for a in arrays if a is not None]
        if not present:
            return None
        if len(present) < len(arrays):
            missing = next(doc.id for doc, a in zip(self._docs, arrays, strict=True) if a is None)
            raise ValueError(
                f"{len(arrays) - len(present)} of {len(arrays)} Documents have no {field} "
                f"(first: id {missing!r}); set it on all of them or none"
            )
        shape = present[0].shape
        for doc, array in zip(self._docs, present, strict=True):
            if array.shape != shape:
                raise ValueError(
                    f"cannot stack {field}s of different shapes: {shape} for id "
                    f"{self._docs[0].id!r} but {array.shape} for id {doc.id!r}"
                )
        return np.stack(present)

    def _rows(self, value: npt.ArrayLike | None, name: str) -> list[npt.NDArray[Any] | None]:
        if value is None:
            return [None] * len(self._docs)
        array = np.asarray(value)
        if array.ndim == 0:
            raise ValueError(f"cannot set {name} from a 0-d array; give shape (n, ...)")
        self._check_length(array, name)
        if array.ndim == 1:
            # Iterating a 1-d array yields numpy scalars; keep 0-d arrays instead.
            return [array[i, ...] for i in range(len(array))]
        return list(array)

    # -- search -----------------------------------------------------------------------------

    def match(
        self,
        index: DocumentArray,
        *,
        metric: Metric = "cosine",
        limit: int = 20,
        exclude_self: bool = False,
    ) -> None:
        """Find the ``limit`` nearest Documents of ``index`` for each Document here.

        Fills each Document's ``matches`` (replacing what was there) with shallow copies of
        the nearest ``index`` Documents (without their own matches), best first, each with
        ``scores[metric]`` set. Scores are computed with one matrix product.

        Args:
            index: The Documents to search; all must have 1-d embeddings of the same size as
                the embeddings here.
            metric: ``"cosine"`` (cosine similarity; higher is better; a zero vector has
                similarity 0 to everything), ``"dot"`` (dot product; higher is better) or
                ``"euclidean"`` (euclidean distance; lower is better).
            limit: The most matches to keep per Document.
            exclude_self: Leave out index Documents whose id is the query Document's id.

        Raises:
            ValueError: unknown metric, ``limit < 1``, or missing or mismatched embeddings.

        Example::

            queries.match(index, metric="euclidean", limit=3)
            best = queries[0].matches[0].scores["euclidean"]
        """
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not self._docs:
            return
        if not index:
            for doc in self._docs:
                doc.matches = DocumentArray()
            return
        queries = _embedding_matrix(self, "query")
        candidates = _embedding_matrix(index, "index")
        if queries.shape[1] != candidates.shape[1]:
            raise ValueError(
                f"query embeddings have dimension {queries.shape[1]} but index embeddings "
                f"have dimension {candidates.shape[1]}; they must be the same"
            )
        scores = _score_matrix(queries, candidates, metric)
        # ``keys`` sorts ascending with the best match first; a copy when it will be edited.
        if not score_is_ascending(metric):
            keys = -scores
        else:
            keys = scores.copy() if exclude_self else scores
        excluded = self._mark_self_matches(index, keys) if exclude_self else None
        top = _top_k(keys, min(limit, len(index)))
        top_scores = np.take_along_axis(scores, top, axis=1).tolist()
        index_docs = index._docs
        for row, (doc, positions) in enumerate(zip(self._docs, top.tolist(), strict=True)):
            skip = excluded[row] if excluded is not None else ()
            matches = []
            for position, score in zip(positions, top_scores[row], strict=True):
                if position in skip:
                    continue
                match = index_docs[position]._clone(with_matches=False)
                match.scores[metric] = score
                matches.append(match)
            doc._matches = DocumentArray._wrap(matches)

    def _mark_self_matches(
        self, index: DocumentArray, keys: npt.NDArray[np.floating[Any]]
    ) -> list[set[int]]:
        """Push each query's own id in ``index`` to the end of ``keys``; return those cells."""
        positions_of: dict[str, list[int]] = {}
        for position, doc in enumerate(index._docs):
            positions_of.setdefault(doc.id, []).append(position)
        excluded = []
        for row, doc in enumerate(self._docs):
            positions = positions_of.get(doc.id, [])
            keys[row, positions] = np.inf
            excluded.append(set(positions))
        return excluded

    # -- serialization ----------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialize to the bytes of a ``meshflow.v1.DocumentList`` protobuf message."""
        # lazy: document/proto.py imports this module (it builds DocumentArrays)
        from meshflow.document.proto import documents_to_proto

        message = document_pb2.DocumentList()
        documents_to_proto(self._docs, message.docs)
        return message.SerializeToString()

    @classmethod
    def from_bytes(cls, data: bytes) -> DocumentArray:
        """Read the bytes written by :meth:`to_bytes`."""
        # lazy: document/proto.py imports this module (it builds DocumentArrays)
        from meshflow.document.proto import documents_from_proto

        return documents_from_proto(document_pb2.DocumentList.FromString(data).docs)


def _checked(doc: object) -> Document:
    if not isinstance(doc, Document):
        raise TypeError(f"a DocumentArray holds Documents only, not {type(doc).__name__}")
    return doc


def _embedding_matrix(docs: DocumentArray, role: str) -> npt.NDArray[np.floating[Any]]:
    try:
        matrix = docs.embeddings
    except ValueError as exc:
        raise ValueError(f"cannot match: {role} {exc}") from None
    if matrix is None:
        raise ValueError(f"cannot match: no {role} Document has an embedding")
    if matrix.ndim != 2:
        raise ValueError(
            f"cannot match: {role} embeddings must be 1-d vectors, got shape {matrix.shape[1:]}"
        )
    if matrix.dtype.kind not in "biuf":
        raise ValueError(f"cannot match: {role} embeddings have non-real dtype {matrix.dtype}")
    # At least float32, so float16 and integer embeddings neither overflow nor truncate.
    return matrix.astype(np.result_type(matrix.dtype, np.float32), copy=False)


def _score_matrix(
    queries: npt.NDArray[np.floating[Any]], candidates: npt.NDArray[np.floating[Any]], metric: str
) -> npt.NDArray[np.floating[Any]]:
    if metric == "dot":
        return queries @ candidates.T
    if metric == "cosine":
        return _normalized(queries) @ _normalized(candidates).T
    # |q - c|² = |q|² + |c|² - 2 q·c; rounding can make it slightly negative.
    squared: npt.NDArray[np.floating[Any]] = -2 * (queries @ candidates.T)
    squared += np.einsum("ij,ij->i", queries, queries)[:, None]
    squared += np.einsum("ij,ij->i", candidates, candidates)[None, :]
    np.maximum(squared, 0, out=squared)
    np.sqrt(squared, out=squared)
    return squared


def _normalized(matrix: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.floating[Any]]:
    norms: npt.NDArray[np.floating[Any]] = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1  # a zero vector stays zero: similarity 0, and no division warning
    return matrix / norms


def _top_k(keys: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.intp]:
    """Column indices of the ``k`` smallest keys of each row, smallest first."""
    if k < keys.shape[1]:
        part = np.argpartition(keys, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)
    return np.argsort(keys, axis=1, kind="stable")
