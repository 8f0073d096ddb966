"""Executors for the columnar wire layout's Flow tests (importable by executor processes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from meshflow import Document, DocumentArray, Executor, requests


class Touch(Executor):
    """Appends to every text and adds 1.0 to every embedding, one document at a time."""

    @requests
    async def touch(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.text += "a"
            doc.embedding = doc.embedding + 1.0


class TouchSync(Executor):
    """The same, as a sync method (run in the executor's thread pool)."""

    @requests
    def touch(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.text += "s"
            doc.embedding = doc.embedding + 1.0


class Shape(Executor):
    """Reports what the endpoint saw: how the embeddings arrived."""

    @requests
    def shape(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        matrix = docs.embeddings
        return {
            "shape": list(matrix.shape) if matrix is not None else None,
            "writeable": bool(matrix.flags.writeable) if matrix is not None else None,
        }


class Neighbours(Executor):
    """Gives each document two matches with embeddings, and a chunk with a tensor."""

    @requests
    def search(self, docs: DocumentArray, **kwargs: Any) -> None:
        for doc in docs:
            doc.matches = [
                Document(id=f"{doc.id}-m{k}", embedding=doc.embedding * k, scores={"dot": k})
                for k in range(2)
            ]
            doc.chunks = [Document(id=f"{doc.id}-c", tensor=np.eye(2, dtype=np.uint8))]
