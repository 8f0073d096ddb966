"""The layout multimodal Executors share: one chunk per modality, tagged with its name.

An encoder puts its embedding on the chunk ``<doc id>/<modality>`` tagged
``{space_tag: modality}``; the VectorIndexer indexes and searches each modality's chunk in its
own space, and the Ranker fuses the matches each chunk found.
"""

from __future__ import annotations

import numpy as np

from meshflow import Document


def put_embedding(doc: Document, vector: np.ndarray, modality: str, space_tag: str) -> None:
    """Set ``doc.embedding`` (no modality), or that of its chunk of this modality (added if
    missing)."""
    if not modality:
        doc.embedding = vector
        return
    for chunk in doc.chunks:
        if chunk.tags.get(space_tag) == modality:
            chunk.embedding = vector
            return
    doc.chunks.append(
        Document(
            id=f"{doc.id}/{modality}",
            parent_id=doc.id,
            embedding=vector,
            tags={space_tag: modality},
        )
    )
