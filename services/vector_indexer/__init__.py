"""VectorIndexer: the embedded default store (SQLite in WAL mode + faiss)."""

from services.vector_indexer.executor import SearchParams, VectorIndexer

__all__ = ["SearchParams", "VectorIndexer"]
