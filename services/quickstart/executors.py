"""Executors of the quickstart app: encode text, tag it, index it in shards, search it."""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np

from meshflow import DocumentArray, Executor, requests

_WORD = re.compile(r"[a-z0-9]+")


class HashingEncoder(Executor):
    """Embeds text as L2-normalised hashed character n-gram counts (a feature hashing
    vectorizer): deterministic, numpy only, good enough to find near-duplicates and typos."""

    def __init__(self, dim: int = 512, ngram: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dim < 8 or ngram < 1:
            raise ValueError("dim must be >= 8 and ngram >= 1")
        self.dim = dim
        self.ngram = ngram

    def embed(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            padded = f" {word} "
            for i in range(max(1, len(padded) - self.ngram + 1)):
                gram = padded[i : i + self.ngram]
                h = zlib.crc32(gram.encode())
                vec[h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm else vec

    @requests(on=["/index", "/search"])
    def encode(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.embedding = self.embed(doc.text)


class KeywordTagger(Executor):
    """Tags each document with the categories whose keywords appear in its text."""

    def __init__(self, categories: dict[str, list[str]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.categories = {k: {w.lower() for w in v} for k, v in (categories or {}).items()}

    @requests(on=["/index", "/search"])
    def tag(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            words = set(_WORD.findall(doc.text.lower()))
            doc.tags["categories"] = sorted(c for c, kw in self.categories.items() if kw & words)


class ShardIndex(Executor):
    """An in-memory vector index; one instance per shard, searched across all shards."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.docs = DocumentArray()

    @requests(on="/index")
    def index(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        for doc in docs:
            stored = doc.copy()
            stored.tags["shard"] = self.runtime_args.shard_id
            self.docs.append(stored)
        return {"indexed": len(docs)}

    @requests(on="/search")
    def search(self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any) -> None:
        if not len(self.docs):
            return
        limit = int(parameters.get("limit", 3))
        docs.match(self.docs, metric="cosine", limit=limit)
        wanted = parameters.get("category")
        if wanted:
            for doc in docs:
                keep = [m for m in doc.matches if wanted in m.tags.get("categories", [])]
                doc.matches = DocumentArray(keep)

    @requests(on="/count")
    def count(self, **kwargs: Any) -> dict[str, Any]:
        return {f"shard-{self.runtime_args.shard_id}": len(self.docs)}
