"""VectorIndexer: documents and metadata in SQLite (WAL), vectors in faiss.

SQLite in the executor's workspace is the source of truth: a request is acknowledged only
after its transaction commits, so a process killed with SIGKILL and restarted has lost
nothing it acknowledged. The faiss index is rebuilt from SQLite on start-up. Below
``hnsw_threshold`` vectors it is exact (``IndexFlatIP``); above it, HNSW
(``IndexHNSWFlat``), where deletions and updates leave stale vectors that searches skip
until the next rebuild. Vectors are L2-normalised, so inner product is cosine similarity.

Replicas of a shard share its workspace, so they share one SQLite file (``state_scope =
'workspace'``): every write also appends to a change log (table ``changes``) in its
transaction, and before a replica searches it replays the changes made since its last look,
by itself or by the other replicas, into its own faiss index. A replica that fell more than
``log_size`` changes behind rebuilds from SQLite instead.

Sharded, each shard has its own workspace (``<workspace>/<name>/shard-<i>``); a Flow sends
writes to the shard owning each document id (``polling={'/index': 'ID', '/update': 'ID',
'/delete': 'ID'}``), searches every shard (``'/search': 'ALL'``, the best matches by score)
and adds up the counts (``'/count': 'ALL'``; the endpoints declare ``reduce`` rules).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from meshflow import Document, DocumentArray, Executor, requests

SCORE = "cosine"


@dataclass
class SearchParams:
    """Parameters of ``/search``."""

    limit: int = 10
    """Matches per query document."""
    filter: dict[str, Any] = field(default_factory=dict)
    """Tag equality filter, e.g. ``{"category": "shoes"}``: matches must carry these tags."""


class VectorIndexer(Executor):
    """Stores documents with embeddings; ``/index``, ``/search``, ``/update``, ``/delete``,
    ``/count``.

    One vector space by default: each document's own ``embedding`` (``dim``). With
    ``spaces``, several named spaces, one per modality: a document's vectors are the
    embeddings of its chunks whose ``tags[space_tag]`` names a space (``"image"``,
    ``"text"``...; the space ``""`` is the document's own embedding). A query searches each
    space it has a vector in, and the matches go where the vector was: on the query document
    for ``""``, on the chunk otherwise (a ranker can fuse them).

    Args:
        dim: embedding size of the single space (checked on every document).
        spaces: named spaces and their sizes, e.g. ``{"image": 1280, "text": 384}``;
            replaces ``dim``.
        space_tag: the chunk tag naming a chunk's space.
        hnsw_threshold: above this many vectors a space's index is HNSW, exact below.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (recall against speed).
        threads: faiss' OpenMP threads in this process; 1 by default, because shards and
            replicas are processes already (several OpenMP pools on the same cores spin
            against each other).
        log_size: changes kept in the change log replicas catch up from; a replica further
            behind rebuilds its faiss index from SQLite.
        busy_timeout: seconds a write waits for another replica's write to finish.
    """

    state_scope = "workspace"

    def __init__(
        self,
        dim: int = 512,
        spaces: dict[str, int] | None = None,
        space_tag: str = "modality",
        hnsw_threshold: int = 50_000,
        hnsw_m: int = 32,
        ef_search: int = 64,
        threads: int = 1,
        log_size: int = 100_000,
        busy_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        dims = dict(spaces) if spaces else {"": dim}
        if any(not isinstance(d, int) or d < 1 for d in dims.values()):
            raise ValueError(f"every space needs a positive integer size, got {dims}")
        if hnsw_threshold < 0 or hnsw_m < 2 or ef_search < 1 or threads < 1:
            raise ValueError("hnsw_m, ef_search and threads must be positive")
        if log_size < 1 or busy_timeout <= 0:
            raise ValueError("log_size and busy_timeout must be positive")
        self.log_size = log_size
        self.threads = threads
        self.dims = dims
        self.space_tag = space_tag
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self._lock = threading.Lock()
        self.path = os.path.join(self.workspace, "index.sqlite")
        self.db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=busy_timeout
        )
        self.db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed transaction survives the process being killed.
        self.db.execute("PRAGMA synchronous=NORMAL")
        with self._writing():  # replicas starting together create the tables once
            # AUTOINCREMENT: a rowid is never reused, so a replica replaying the change log
            # (or an HNSW index holding a removed vector) never mistakes one row for another.
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS items (rowid INTEGER PRIMARY KEY AUTOINCREMENT,"
                " id TEXT UNIQUE NOT NULL, text TEXT, uri TEXT, mime_type TEXT, tags TEXT)"
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (item INTEGER NOT NULL, space TEXT NOT NULL,"
                " embedding BLOB NOT NULL, PRIMARY KEY (item, space))"
            )
            # One row per row of items added (added = 1) or removed (0), in commit order.
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " item INTEGER NOT NULL, added INTEGER NOT NULL)"
            )
        self._seen = 0
        self.spaces: dict[str, _Space] = {}
        self._load()

    @property
    def dim(self) -> int:
        """The size of the single space (of the first space with ``spaces``)."""
        return next(iter(self.dims.values()))

    # -- the faiss side ----------------------------------------------------------------------

    def _load(self) -> None:
        """Every space's faiss index from SQLite, and the change they are up to (one
        snapshot)."""
        with self._snapshot():
            self._seen = self._last_change()
            self.spaces = {name: self._rebuild(name) for name in self.dims}

    def _catch_up(self) -> None:
        """Replay into faiss the changes committed since the last look, by this replica or
        by the others sharing the workspace (call with ``self._lock`` held)."""
        with self._snapshot():
            last = self._last_change()
            if last == self._seen:
                return
            (first,) = self.db.execute("SELECT MIN(seq) FROM changes").fetchone()
            # pruned past what we have seen (or a store replaced under us): start afresh
            if first is None or first > self._seen + 1 or last < self._seen:
                self._seen = last
                self.spaces = {name: self._rebuild(name) for name in self.dims}
                return
            changes = self.db.execute(
                "SELECT item, added FROM changes WHERE seq > ? ORDER BY seq", (self._seen,)
            ).fetchall()
            removed = sorted({item for item, added in changes if not added})
            final: dict[int, int] = {}
            for item, added in changes:
                final[item] = added
            stored = self._stored_vectors([item for item, added in final.items() if added])
            self._forget(removed)
            rowids = sorted(stored)
            self._add(rowids, [stored[r] for r in rowids])
            self._seen = last

    def _last_change(self) -> int:
        (last,) = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(last)

    def _rebuild(self, space: str) -> _Space:
        """A fresh faiss index for ``space`` from every row of SQLite."""
        dim = self.dims[space]
        rows = self.db.execute(
            "SELECT item, embedding FROM vectors WHERE space = ? ORDER BY item", (space,)
        ).fetchall()
        hnsw = len(rows) > self.hnsw_threshold
        if hnsw:
            base = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efSearch = self.ef_search
        else:
            base = faiss.IndexFlatIP(dim)
        built = _Space(dim=dim, index=faiss.IndexIDMap2(base), hnsw=hnsw)
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            built.index.add_with_ids(vectors.reshape(len(rows), dim), ids)
        return built

    @property
    def hnsw(self) -> bool:
        """Whether any space is an HNSW index."""
        return any(s.hnsw for s in self.spaces.values())

    def _vectors(self, doc: Document, required: bool = True) -> dict[str, np.ndarray]:
        """The document's vector per space: its own embedding, or its chunks'."""
        return {space: v for space, (_, v) in self._holders(doc, required).items()}

    def _holders(
        self, doc: Document, required: bool = True
    ) -> dict[str, tuple[Document, np.ndarray]]:
        """Per space, where the document's vector is (itself or a chunk) and the vector."""
        found: dict[str, tuple[Document, np.ndarray]] = {}
        if "" in self.dims and doc.embedding is not None:
            found[""] = (doc, self._normalised(doc, "", doc.embedding))
        for chunk in doc.chunks:
            space = chunk.tags.get(self.space_tag)
            if isinstance(space, str) and space in self.dims and chunk.embedding is not None:
                found[space] = (chunk, self._normalised(doc, space, chunk.embedding))
        if required and not found:
            if list(self.dims) == [""]:
                raise ValueError(f"document {doc.id!r} has no embedding")
            raise ValueError(
                f"document {doc.id!r} has no embedding in any space of this index: give it"
                f" chunks with tags {{{self.space_tag!r}: one of {sorted(self.dims)}}}"
                " and an embedding"
            )
        return found

    def _normalised(self, doc: Document, space: str, embedding: Any) -> np.ndarray:
        vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
        dim = self.dims[space]
        if vector.shape[0] != dim:
            where = f"space {space!r} of " if space else ""
            raise ValueError(
                f"document {doc.id!r} has a {vector.shape[0]}-d embedding; {where}this index"
                f" is {dim}-d"
            )
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def _forget(self, rowids: list[int]) -> None:
        if not rowids:
            return
        for space in self.spaces.values():
            if space.hnsw:  # HNSW cannot remove: skip them until the next rebuild
                space.stale.update(rowids)
            else:
                space.index.remove_ids(np.asarray(rowids, dtype=np.int64))

    def _add(self, rowids: list[int], vectors: list[dict[str, np.ndarray]]) -> None:
        for name, space in list(self.spaces.items()):
            pairs = [(r, v[name]) for r, v in zip(rowids, vectors, strict=True) if name in v]
            if space.hnsw and space.stale.intersection(rowids):  # a rowid of an old table
                self.spaces[name] = self._rebuild(name)  # came back: its stale mark must go
                continue
            if pairs:
                space.index.add_with_ids(
                    np.stack([v for _, v in pairs]), np.asarray([r for r, _ in pairs], np.int64)
                )
            if not space.hnsw and space.index.ntotal > self.hnsw_threshold:
                self.spaces[name] = self._rebuild(name)

    # -- endpoints ---------------------------------------------------------------------------

    @requests(on="/index", reduce={"indexed": "sum"})
    def index_docs(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        """Insert documents; an id already stored is replaced."""
        vectors = [self._vectors(d) for d in docs]
        with self._lock:
            faiss.omp_set_num_threads(self.threads)
            with self._writing():
                old = self._rowids([d.id for d in docs])
                rowids = self._write(docs, vectors, replacing=old)
            self._catch_up()
        return {"indexed": len(rowids)}

    @requests(on="/update", reduce={"updated": "sum"})
    def update(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        """Change stored documents: text, uri, tags (merged) and, when given, embeddings."""
        given = [self._vectors(d, required=False) for d in docs]
        with self._lock:
            faiss.omp_set_num_threads(self.threads)
            with self._writing():  # read and write in one transaction: replicas take turns
                found = {r[1]: r for r in self._rows([d.id for d in docs])}
                missing = [d.id for d in docs if d.id not in found]
                if missing:
                    raise KeyError(f"no stored document with id {', '.join(map(repr, missing))}")
                old = [found[d.id][0] for d in docs]
                stored_vectors = self._stored_vectors(old)
                merged = DocumentArray()
                vectors = []
                for doc, new in zip(docs, given, strict=True):
                    stored = _document(found[doc.id])
                    stored.text = doc.text or stored.text
                    stored.uri = doc.uri or stored.uri
                    stored.tags.update(doc.tags)
                    merged.append(stored)
                    vectors.append({**stored_vectors.get(found[doc.id][0], {}), **new})
                rowids = self._write(merged, vectors, replacing=old)
            self._catch_up()
        return {"updated": len(rowids)}

    @requests(on="/delete", reduce={"deleted": "sum"})
    def delete(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        """Remove the documents with these ids (unknown ids are ignored)."""
        with self._lock:
            with self._writing():
                rowids = self._rowids([d.id for d in docs])
                self._delete_rows(rowids)
                self._log(removed=rowids, added=[])
            self._catch_up()
        return {"deleted": len(rowids)}

    @requests(on="/count", read_only=True, reduce={"count": "sum"})
    def count(self, **kwargs: Any) -> dict[str, Any]:
        (n,) = self.db.execute("SELECT COUNT(*) FROM items").fetchone()
        return {"count": n}

    @requests(on="/search", read_only=True)
    def search(self, docs: DocumentArray, parameters: SearchParams, **kwargs: Any) -> None:
        """Give each query (the document, or its chunk, per space) its ``limit`` best matches
        (``scores['cosine']``)."""
        if not len(docs) or parameters.limit < 1:
            return
        targets: dict[str, list[tuple[Document, np.ndarray]]] = {}
        for doc in docs:
            for space, (target, vector) in self._holders(doc).items():
                targets.setdefault(space, []).append((target, vector))
        with self._lock:
            faiss.omp_set_num_threads(self.threads)  # per thread: endpoints run in a pool
            self._catch_up()  # the other replicas' writes too
            hits: list[tuple[Document, list[tuple[int, float]]]] = []
            for space, pairs in targets.items():
                queries = np.stack([v for _, v in pairs])
                if parameters.filter:
                    found = self._filtered(space, queries, parameters.filter, parameters.limit)
                else:
                    found = self._nearest(space, queries, parameters.limit)
                hits += [(t, f) for (t, _), f in zip(pairs, found, strict=True)]
            wanted = sorted({rowid for _, found in hits for rowid, _ in found})
            rows = {r[0]: r for r in self._rows_by_rowid(wanted)}
        for target, found in hits:
            matches = DocumentArray()
            for rowid, score in found:
                match = _document(rows[rowid])
                match.scores[SCORE] = float(score)
                matches.append(match)
            target.matches = matches

    def _nearest(self, name: str, queries: np.ndarray, limit: int) -> list[list[tuple[int, float]]]:
        space = self.spaces[name]
        if space.index.ntotal == 0:
            return [[] for _ in queries]
        extra = len(space.stale)  # stale HNSW vectors may take places in the top-k
        scores, ids = space.index.search(queries, min(limit + extra, space.index.ntotal))
        out = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            found = [
                (int(i), float(s))
                for i, s in zip(row_ids, row_scores, strict=True)
                if i >= 0 and int(i) not in space.stale
            ]
            out.append(found[:limit])
        return out

    def _filtered(
        self, name: str, queries: np.ndarray, where: dict[str, Any], limit: int
    ) -> list[list[tuple[int, float]]]:
        """Exact search over the rows whose tags match ``where`` (filtered in SQLite)."""
        clauses = " AND ".join("json_extract(i.tags, ?) = json_extract(?, '$')" for _ in where)
        args: list[Any] = [name]
        for key, value in where.items():
            args += [f"$.{json.dumps(str(key))}", json.dumps(value)]
        fetched = self.db.execute(
            "SELECT v.item, v.embedding FROM vectors v JOIN items i ON i.rowid = v.item"
            f" WHERE v.space = ? AND {clauses}",
            args,
        ).fetchall()
        if not fetched:
            return [[] for _ in queries]
        ids = np.asarray([r[0] for r in fetched], dtype=np.int64)
        matrix = np.frombuffer(b"".join(r[1] for r in fetched), dtype=np.float32)
        scores = queries @ matrix.reshape(len(fetched), self.dims[name]).T
        out = []
        for row in scores:
            best = np.argsort(-row)[:limit]
            out.append([(int(ids[j]), float(row[j])) for j in best])
        return out

    # -- SQLite ------------------------------------------------------------------------------

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, the write lock taken at its start (other replicas wait up
        to ``busy_timeout``); rolled back if anything raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read transaction: every query inside sees the same committed state."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _log(self, *, removed: list[int], added: list[int]) -> None:
        """Record the rows removed and added (inside the write transaction) and keep the last
        ``log_size`` changes."""
        self.db.executemany(
            "INSERT INTO changes (item, added) VALUES (?, ?)",
            [(r, 0) for r in removed] + [(r, 1) for r in added],
        )
        self.db.execute(
            "DELETE FROM changes WHERE seq <= (SELECT MAX(seq) FROM changes) - ?",
            (self.log_size,),
        )

    def _write(
        self, docs: DocumentArray, vectors: list[dict[str, np.ndarray]], replacing: list[int]
    ) -> list[int]:
        """Insert ``docs`` in place of the rows ``replacing`` (their ids' current rows) and log
        both, inside the caller's write transaction; return the new rowids."""
        rowids = []
        self._delete_rows(replacing)
        for doc, spaces in zip(docs, vectors, strict=True):
            cursor = self.db.execute(
                "INSERT INTO items (id, text, uri, mime_type, tags) VALUES (?, ?, ?, ?, ?)",
                (doc.id, doc.text, doc.uri, doc.mime_type, json.dumps(dict(doc.tags))),
            )
            assert cursor.lastrowid is not None
            rowids.append(cursor.lastrowid)
            self.db.executemany(
                "INSERT INTO vectors (item, space, embedding) VALUES (?, ?, ?)",
                [
                    (cursor.lastrowid, space, v.astype(np.float32).tobytes())
                    for space, v in spaces.items()
                ],
            )
        self._log(removed=replacing, added=rowids)
        return rowids

    def _delete_rows(self, rowids: list[int]) -> None:
        self.db.executemany("DELETE FROM items WHERE rowid = ?", [(r,) for r in rowids])
        self.db.executemany("DELETE FROM vectors WHERE item = ?", [(r,) for r in rowids])

    def _stored_vectors(self, rowids: list[int]) -> dict[int, dict[str, np.ndarray]]:
        """Per row, its stored vector per space (a query per 10,000 rows: SQLite takes at most
        32,766 parameters)."""
        out: dict[int, dict[str, np.ndarray]] = {}
        for start in range(0, len(rowids), 10_000):
            chunk = rowids[start : start + 10_000]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT item, space, embedding FROM vectors WHERE item IN ({marks})", chunk
            )
            for item, space, blob in rows:
                out.setdefault(item, {})[space] = np.frombuffer(blob, dtype=np.float32)
        return out

    def _rowids(self, ids: list[str]) -> list[int]:
        return [r[0] for r in self._rows(ids)]

    def _rows(self, ids: list[str]) -> list[tuple[Any, ...]]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return self.db.execute(f"SELECT * FROM items WHERE id IN ({marks})", ids).fetchall()

    def _rows_by_rowid(self, rowids: list[int]) -> list[tuple[Any, ...]]:
        if not rowids:
            return []
        marks = ",".join("?" * len(rowids))
        return self.db.execute(f"SELECT * FROM items WHERE rowid IN ({marks})", rowids).fetchall()


@dataclass
class _Space:
    """One vector space: its faiss index, and the ids HNSW still holds but were removed."""

    dim: int
    index: Any
    hnsw: bool
    stale: set[int] = field(default_factory=set)


def _document(row: tuple[Any, ...]) -> Document:
    _, doc_id, text, uri, mime_type, tags = row
    doc = Document(id=doc_id, text=text or "", uri=uri or "", mime_type=mime_type or "")
    doc.tags.update(json.loads(tags or "{}"))
    return doc
