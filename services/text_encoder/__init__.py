"""TextEncoder: MiniLM sentence embeddings (all-MiniLM-L6-v2, shipped in a package)."""

from services.text_encoder.executor import TextEncoder

__all__ = ["TextEncoder"]
