"""The app's encoders without dynamic batching, for ``batching_bench.py``'s side-by-side run:
the same methods, bound to the same endpoints, without ``@dynamic_batching``."""

from __future__ import annotations

from typing import Any

from meshflow import DocumentArray, requests
from services.image_encoder import ImageEncoder as _ImageEncoder
from services.text_encoder import TextEncoder as _TextEncoder


class TextEncoder(_TextEncoder):
    @requests(on=["/index", "/update"])
    def encode(self, docs: DocumentArray, **kwargs: Any) -> None:
        super().encode(docs, **kwargs)

    @requests(on="/search", read_only=True)
    def encode_queries(self, docs: DocumentArray, **kwargs: Any) -> None:
        super().encode_queries(docs, **kwargs)


class ImageEncoder(_ImageEncoder):
    @requests(on=["/index", "/update"])
    def encode(self, docs: DocumentArray, **kwargs: Any) -> None:
        super().encode(docs, **kwargs)

    @requests(on="/search", read_only=True)
    def encode_queries(self, docs: DocumentArray, **kwargs: Any) -> None:
        super().encode_queries(docs, **kwargs)
