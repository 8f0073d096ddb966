"""VectorIndexer: documents and metadata in SQLite (WAL), vectors in faiss.

SQLite in the executor's workspace is the source of truth: a request is acknowledged only
after its transaction commits, so a process killed with SIGKILL and restarted has lost
nothing it acknowledged. The faiss index is rebuilt from SQLite on start-up. Below
``hnsw_threshold`` vectors it is exact (``IndexFlatIP``); above it, HNSW
(``IndexHNSWFlat``), where deletions and updates leave stale vectors that searches skip
until the next rebuild. Vectors are L2-normalised, so inner product is cosine similarity.

Sharded, each shard has its own workspace (``<workspace>/<name>/shard-<i>``); a Flow
searches every shard (``polling={'/search': 'ALL'}``) and keeps the best matches by score.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
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

    Args:
        dim: embedding size (checked on every document).
        hnsw_threshold: above this many vectors the index is HNSW, exact below.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (recall against speed).
        threads: faiss' OpenMP threads in this process; 1 by default, because shards and
            replicas are processes already (several OpenMP pools on the same cores spin
            against each other).
    """

    def __init__(
        self,
        dim: int = 512,
        hnsw_threshold: int = 50_000,
        hnsw_m: int = 32,
        ef_search: int = 64,
        threads: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dim < 1 or hnsw_threshold < 0 or hnsw_m < 2 or ef_search < 1 or threads < 1:
            raise ValueError("dim, hnsw_m, ef_search and threads must be positive")
        self.threads = threads
        self.dim = dim
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self._lock = threading.Lock()
        self.path = os.path.join(self.workspace, "index.sqlite")
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed transaction survives the process being killed.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS docs (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL,"
            " text TEXT, uri TEXT, mime_type TEXT, tags TEXT, embedding BLOB NOT NULL)"
        )
        self._rebuild()

    # -- the faiss side ----------------------------------------------------------------------

    def _rebuild(self) -> None:
        """A fresh faiss index from every row of SQLite."""
        rows = self.db.execute("SELECT rowid, embedding FROM docs ORDER BY rowid").fetchall()
        self.hnsw = len(rows) > self.hnsw_threshold
        if self.hnsw:
            base = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efSearch = self.ef_search
        else:
            base = faiss.IndexFlatIP(self.dim)
        self.index = faiss.IndexIDMap2(base)
        self.stale: set[int] = set()
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            self.index.add_with_ids(vectors.reshape(len(rows), self.dim), ids)

    def _vector(self, doc: Document) -> np.ndarray:
        if doc.embedding is None:
            raise ValueError(f"document {doc.id!r} has no embedding")
        vector = np.asarray(doc.embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.dim:
            raise ValueError(
                f"document {doc.id!r} has a {vector.shape[0]}-d embedding; this index is "
                f"{self.dim}-d"
            )
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def _forget(self, rowids: list[int]) -> None:
        if not rowids:
            return
        if self.hnsw:  # HNSW cannot remove: skip them until the next rebuild
            self.stale.update(rowids)
        else:
            self.index.remove_ids(np.asarray(rowids, dtype=np.int64))

    # -- endpoints ---------------------------------------------------------------------------

    @requests(on="/index")
    def index_docs(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        """Insert documents; an id already stored is replaced."""
        vectors = [self._vector(d) for d in docs]
        with self._lock:
            faiss.omp_set_num_threads(self.threads)
            old = self._rowids([d.id for d in docs])
            rowids = self._write(docs, vectors)
            self._forget(old)
            if rowids:
                self.index.add_with_ids(np.stack(vectors), np.asarray(rowids, dtype=np.int64))
            if not self.hnsw and self.index.ntotal > self.hnsw_threshold:
                self._rebuild()
        return {"indexed": len(rowids)}

    @requests(on="/update")
    def update(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        """Change stored documents: text, uri, tags (merged) and, when given, the embedding."""
        with self._lock:
            found = {r[1]: r for r in self._rows([d.id for d in docs])}
            missing = [d.id for d in docs if d.id not in found]
            if missing:
                raise KeyError(f"no stored document with id {', '.join(map(repr, missing))}")
            merged = DocumentArray()
            vectors = []
            for doc in docs:
                stored = _document(found[doc.id])
                stored.text = doc.text or stored.text
                stored.uri = doc.uri or stored.uri
                stored.tags.update(doc.tags)
                merged.append(stored)
                vectors.append(
                    self._vector(doc)
                    if doc.embedding is not None
                    else np.frombuffer(found[doc.id][6], dtype=np.float32)
                )
            old = [found[d.id][0] for d in docs]
            rowids = self._write(merged, vectors)
            self._forget(old)
            self.index.add_with_ids(np.stack(vectors), np.asarray(rowids, dtype=np.int64))
        return {"updated": len(rowids)}

    @requests(on="/delete")
    def delete(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        """Remove the documents with these ids (unknown ids are ignored)."""
        with self._lock:
            rowids = self._rowids([d.id for d in docs])
            with self.db:
                self.db.execute("BEGIN")
                self.db.executemany("DELETE FROM docs WHERE rowid = ?", [(r,) for r in rowids])
            self._forget(rowids)
        return {"deleted": len(rowids)}

    @requests(on="/count", read_only=True)
    def count(self, **kwargs: Any) -> dict[str, Any]:
        (n,) = self.db.execute("SELECT COUNT(*) FROM docs").fetchone()
        return {"count": n}

    @requests(on="/search", read_only=True)
    def search(self, docs: DocumentArray, parameters: SearchParams, **kwargs: Any) -> None:
        """Give each query document its ``limit`` best matches (``scores['cosine']``)."""
        if not len(docs) or parameters.limit < 1:
            return
        queries = np.stack([self._vector(d) for d in docs])
        with self._lock:
            faiss.omp_set_num_threads(self.threads)  # per thread: endpoints run in a pool
            if parameters.filter:
                hits = self._filtered(queries, parameters.filter, parameters.limit)
            else:
                hits = self._nearest(queries, parameters.limit)
            wanted = sorted({rowid for found in hits for rowid, _ in found})
            rows = {r[0]: r for r in self._rows_by_rowid(wanted)}
        for doc, found in zip(docs, hits, strict=True):
            matches = DocumentArray()
            for rowid, score in found:
                match = _document(rows[rowid], with_embedding=False)
                match.scores[SCORE] = float(score)
                matches.append(match)
            doc.matches = matches

    def _nearest(self, queries: np.ndarray, limit: int) -> list[list[tuple[int, float]]]:
        if self.index.ntotal == 0:
            return [[] for _ in queries]
        extra = len(self.stale)  # stale HNSW vectors may take places in the top-k
        scores, ids = self.index.search(queries, min(limit + extra, self.index.ntotal))
        out = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            found = [
                (int(i), float(s))
                for i, s in zip(row_ids, row_scores, strict=True)
                if i >= 0 and int(i) not in self.stale
            ]
            out.append(found[:limit])
        return out

    def _filtered(
        self, queries: np.ndarray, where: dict[str, Any], limit: int
    ) -> list[list[tuple[int, float]]]:
        """Exact search over the rows whose tags match ``where`` (filtered in SQLite)."""
        clauses = " AND ".join("json_extract(tags, ?) = json_extract(?, '$')" for _ in where)
        args: list[Any] = []
        for key, value in where.items():
            args += [f"$.{json.dumps(str(key))}", json.dumps(value)]
        rows = self.db.execute(f"SELECT rowid, embedding FROM docs WHERE {clauses}", args)
        fetched = rows.fetchall()
        if not fetched:
            return [[] for _ in queries]
        ids = np.asarray([r[0] for r in fetched], dtype=np.int64)
        matrix = np.frombuffer(b"".join(r[1] for r in fetched), dtype=np.float32)
        scores = queries @ matrix.reshape(len(fetched), self.dim).T
        out = []
        for row in scores:
            best = np.argsort(-row)[:limit]
            out.append([(int(ids[j]), float(row[j])) for j in best])
        return out

    # -- SQLite ------------------------------------------------------------------------------

    def _write(self, docs: DocumentArray, vectors: list[np.ndarray]) -> list[int]:
        """Insert or replace ``docs`` in one transaction; return their new rowids."""
        rowids = []
        with self.db:
            self.db.execute("BEGIN")
            for doc, vector in zip(docs, vectors, strict=True):
                self.db.execute("DELETE FROM docs WHERE id = ?", (doc.id,))
                cursor = self.db.execute(
                    "INSERT INTO docs (id, text, uri, mime_type, tags, embedding)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        doc.id,
                        doc.text,
                        doc.uri,
                        doc.mime_type,
                        json.dumps(dict(doc.tags)),
                        vector.astype(np.float32).tobytes(),
                    ),
                )
                assert cursor.lastrowid is not None
                rowids.append(cursor.lastrowid)
        return rowids

    def _rowids(self, ids: list[str]) -> list[int]:
        return [r[0] for r in self._rows(ids)]

    def _rows(self, ids: list[str]) -> list[tuple[Any, ...]]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return self.db.execute(f"SELECT * FROM docs WHERE id IN ({marks})", ids).fetchall()

    def _rows_by_rowid(self, rowids: list[int]) -> list[tuple[Any, ...]]:
        if not rowids:
            return []
        marks = ",".join("?" * len(rowids))
        return self.db.execute(f"SELECT * FROM docs WHERE rowid IN ({marks})", rowids).fetchall()


def _document(row: tuple[Any, ...], with_embedding: bool = True) -> Document:
    _, doc_id, text, uri, mime_type, tags, embedding = row
    doc = Document(id=doc_id, text=text or "", uri=uri or "", mime_type=mime_type or "")
    doc.tags.update(json.loads(tags or "{}"))
    if with_embedding:
        doc.embedding = np.frombuffer(embedding, dtype=np.float32).copy()
    return doc
