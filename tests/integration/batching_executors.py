"""Executors of the dynamic batching and devices tests; imported by reference in executor
processes (``'batching_executors:Batches'``)."""

from __future__ import annotations

import os
from typing import Any

from meshflow import DocumentArray, Executor, dynamic_batching, requests


class Batches(Executor):
    """Counts its calls and the batch size of each; ``/encode`` batches 6 documents (or
    what has gathered after 20 s), so that concurrent requests totalling 6 make one call."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sizes: list[int] = []

    @requests(on="/encode")
    @dynamic_batching(preferred_batch_size=6, timeout=20_000)
    def encode(self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any) -> None:
        self.sizes.append(len(docs))
        for d in docs:
            d.text = f"{d.text}|{parameters.get('tag', '')}"
            d.tags["call"] = len(self.sizes)

    @requests(on="/sizes")
    async def report(self, **kwargs: Any) -> dict[str, Any]:
        return {"sizes": list(self.sizes)}


class Environment(Executor):
    """Answers with the environment variables its process sees that ``parameters['names']``
    lists."""

    @requests
    def environ(self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any) -> None:
        for d in docs:
            d.tags.update(
                replica=self.runtime_args.replica_id,
                env={n: os.environ.get(n) for n in parameters.get("names", [])},
            )
