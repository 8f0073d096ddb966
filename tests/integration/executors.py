"""Executors used by the integration tests; imported by reference in executor processes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from typing import Any

import numpy as np

from meshflow import Document, DocumentArray, Executor, requests


class Append(Executor):
    def __init__(self, suffix: str = "x", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suffix = suffix

    @requests
    async def append(self, docs: DocumentArray, **kwargs: Any) -> None:
        for d in docs:
            d.text += self.suffix


class Tag(Executor):
    """Sets tags[<deployment name>] on every doc, and its embedding when asked."""

    @requests
    def tag(self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any) -> None:
        for d in docs:
            d.tags[self.runtime_args.name] = True
            if parameters.get("embed") == self.runtime_args.name:
                d.embedding = np.arange(4, dtype=np.float32)


class Failing(Executor):
    @requests(on="/fail")
    async def fail(self, docs: DocumentArray, **kwargs: Any) -> None:
        raise ValueError("bad input for failing")

    @requests(on="/ok")
    async def ok(self, docs: DocumentArray, **kwargs: Any) -> None:
        for d in docs:
            d.text = "ok"


class Crash(Executor):
    @requests(on="/crash")
    async def crash(self, docs: DocumentArray, **kwargs: Any) -> None:
        os._exit(3)

    @requests(on="/ok")
    async def ok(self, docs: DocumentArray, **kwargs: Any) -> None:
        for d in docs:
            d.text = f"pid {os.getpid()}"


class Slow(Executor):
    """Sleeps ``parameters['seconds']``; /started reports how many sleeps began."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started = 0
        self.finished = 0

    @requests(on="/sleep")
    async def sleep(self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any) -> None:
        self.started += 1
        await asyncio.sleep(float(parameters.get("seconds", 1.0)))
        self.finished += 1

    @requests(on="/stats")
    async def stats(self, **kwargs: Any) -> dict[str, Any]:
        return {"started": self.started, "finished": self.finished}


class Who(Executor):
    """Answers with its runtime arguments and process id."""

    @requests
    def who(self, docs: DocumentArray, **kwargs: Any) -> None:
        args = self.runtime_args
        for d in docs:
            d.tags.update(
                name=args.name,
                replica=args.replica_id,
                shard=args.shard_id,
                pid=os.getpid(),
                thread=threading.current_thread().name,
            )


class Results(Executor):
    @requests(on="/count")
    def count(
        self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any
    ) -> dict[str, Any]:
        return {"count": len(docs), "echo": parameters}


class Replace(Executor):
    @requests(on="/replace")
    def replace(self, docs: DocumentArray, **kwargs: Any) -> DocumentArray:
        return DocumentArray(Document(text=f"new {d.text}") for d in docs)


class MemoryIndex(Executor):
    """A tiny sharded vector index: /index stores, /search matches, /count counts."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stored = DocumentArray()

    @requests(on="/index")
    def index(self, docs: DocumentArray, **kwargs: Any) -> None:
        self.stored.extend(d.copy() for d in docs)

    @requests(on="/search")
    def search(self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any) -> None:
        if len(self.stored):
            docs.match(self.stored, metric="euclidean", limit=int(parameters.get("k", 3)))
        for d in docs:
            for m in d.matches:
                m.tags["shard"] = self.runtime_args.shard_id

    @requests(on="/count")
    def count(self, **kwargs: Any) -> dict[str, Any]:
        return {f"shard{self.runtime_args.shard_id}": len(self.stored)}


class Workspace(Executor):
    @requests
    def write(self, docs: DocumentArray, **kwargs: Any) -> None:
        path = os.path.join(self.workspace, "hits.txt")
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("hit\n")
        for d in docs:
            d.uri = path


class BrokenInit(Executor):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        raise RuntimeError("model file missing")


class NotAnExecutor:
    pass


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


class Concurrency(Executor):
    """Records the largest number of requests it held at once."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.now = 0
        self.peak = 0

    @requests(on="/work")
    async def work(self, docs: DocumentArray, **kwargs: Any) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(0.05)
        self.now -= 1
        for d in docs:
            d.text += "done"

    @requests(on="/peak")
    async def report(self, **kwargs: Any) -> dict[str, Any]:
        return {"peak": self.peak}


class Work(Executor):
    """Takes ``parameters['seconds']`` per request, then tags docs with its pid and replica."""

    @requests
    async def work(self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any) -> None:
        await asyncio.sleep(float(parameters.get("seconds", 0.0)))
        for d in docs:
            d.tags.update(pid=os.getpid(), replica=self.runtime_args.replica_id)


@dataclasses.dataclass
class SearchParams:
    limit: int = 3
    category: str | None = None
    min_score: float = 0.0


class Catalog(Executor):
    """Read-only /search with typed parameters over a fixed catalog."""

    ITEMS = [("shoe-1", "shoes"), ("shoe-2", "shoes"), ("coat-1", "coats"), ("coat-2", "coats")]

    @requests(on="/search", read_only=True)
    def search(self, docs: DocumentArray, parameters: SearchParams, **kwargs: Any) -> None:
        assert isinstance(parameters.limit, int)
        for d in docs:
            for rank, (item, category) in enumerate(self.ITEMS):
                if parameters.category in (None, category):
                    score = 1.0 / (rank + 1)
                    if score >= parameters.min_score:
                        d.matches.append(Document(id=item, scores={"rank": score}))
            d.matches = DocumentArray(d.matches[: parameters.limit])

    @requests(on="/index")
    def index(self, docs: DocumentArray, **kwargs: Any) -> None:
        pass


class Guarded(Executor):
    """Counts the requests that reach it; answers with the identity the gateway sent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    @requests(on="/calls", read_only=True)
    def count_calls(self, **kwargs: Any) -> dict[str, Any]:
        return {"calls": self.calls}

    @requests(on=["/index", "/search", "/other"])
    def serve(self, docs: DocumentArray, auth: Any = None, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if auth is None:
            return {"subject": None, "kwargs": sorted(kwargs)}
        return {
            "subject": auth.subject,
            "scopes": sorted(auth.scopes),
            "issuer": auth.issuer,
            "tenant": auth.claims.get("tenant"),
            "claims": sorted(auth.claims),
            "kwargs": sorted(kwargs),
        }


class Traced(Executor):
    """Opens a span of its own inside the endpoint's; '/fail' raises."""

    @requests
    def work(self, docs: DocumentArray, **kwargs: Any) -> None:
        with self.tracer.start_as_current_span("inner work") as span:
            span.set_attribute("docs", len(docs))
            for d in docs:
                d.text += "!"

    @requests(on="/fail")
    def fail(self, docs: DocumentArray, **kwargs: Any) -> None:
        raise ValueError("traced failure")


class KeyValue(Executor):
    """Documents by id in process memory (one replica per shard): writes must reach the
    shard that owns the id, or /update and /delete miss what /index stored."""

    state_scope = "process"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stored: dict[str, str] = {}

    @requests(on="/index", reduce={"indexed": "sum", "shards": "concat"})
    def index(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        for d in docs:
            self.stored[d.id] = d.text
            d.tags["shard"] = self.runtime_args.shard_id
        return {"indexed": len(docs), "shards": [self.runtime_args.shard_id]}

    @requests(on="/update", reduce={"updated": "sum"})
    def update(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        missing = [d.id for d in docs if d.id not in self.stored]
        if missing:
            raise KeyError(f"no stored document with id {missing[0]!r}")
        for d in docs:
            self.stored[d.id] = d.text
        return {"updated": len(docs)}

    @requests(on="/delete", reduce={"deleted": "sum"})
    def delete(self, docs: DocumentArray, **kwargs: Any) -> dict[str, Any]:
        gone = [self.stored.pop(d.id) for d in docs if d.id in self.stored]
        return {"deleted": len(gone)}

    @requests(on="/get", read_only=True)
    def get(self, docs: DocumentArray, **kwargs: Any) -> None:
        for d in docs:
            d.text = self.stored.get(d.id, "")
            d.tags["shard"] = self.runtime_args.shard_id

    @requests(on="/count", read_only=True, reduce={"count": "sum", "largest": "max"})
    def count(self, **kwargs: Any) -> dict[str, Any]:
        return {"count": len(self.stored), "largest": len(self.stored)}


class Ordered(Executor):
    """Each doc with ``tags['after']`` waits until the doc of that id has been served (at
    most 10 s), then 0.3 s more, so that concurrent requests are answered in an order the
    test chooses."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.served: dict[str, asyncio.Event] = {}

    def _event(self, doc_id: str) -> asyncio.Event:
        return self.served.setdefault(doc_id, asyncio.Event())

    @requests
    async def serve(self, docs: DocumentArray, **kwargs: Any) -> None:
        for d in docs:
            after = d.tags.get("after")
            if after:
                await asyncio.wait_for(self._event(str(after)).wait(), 10)
                # The answer of the doc waited for is still on its way back to the gateway:
                # a head start keeps the two answers from crossing on the way.
                await asyncio.sleep(0.3)
            d.text = f"served {d.id}"
            self._event(d.id).set()


class Blocking(Executor):
    """Sync endpoints: /where answers with its thread, /block sleeps ``seconds`` first; /ping
    is async."""

    @requests(on="/where")
    def where(self, **kwargs: Any) -> dict[str, Any]:
        return {"thread": threading.current_thread().name}

    @requests(on="/block")
    def block(self, parameters: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        time.sleep(float(parameters.get("seconds", 0.1)))
        return {"thread": threading.current_thread().name}

    @requests(on="/ping")
    async def ping(self, **kwargs: Any) -> dict[str, Any]:
        return {"thread": threading.current_thread().name}


class PinnedThread(Executor):
    """A sync endpoint with ``in_thread=True``: tags ``pinned_thread`` with its thread."""

    @requests(in_thread=True)
    def pinned(self, docs: DocumentArray, **kwargs: Any) -> None:
        for d in docs:
            d.tags["pinned_thread"] = threading.current_thread().name


class ProcessFacts(Executor):
    """Answers with facts about its own process (how it was started, what it sees) in
    ``tags[<deployment name>]``."""

    @requests
    def facts(self, docs: DocumentArray, parameters: dict[str, Any], **kwargs: Any) -> None:
        import gc
        import sys

        with open(f"/proc/{os.getpid()}/cmdline", "rb") as fh:
            # as ps shows it: a retitled process has its title in one string
            cmdline = fh.read().replace(b"\0", b" ").decode().split()
        for d in docs:
            d.tags[self.runtime_args.name] = dict(
                replica=self.runtime_args.replica_id,
                pid=os.getpid(),
                ppid=os.getppid(),
                # objects frozen out of the collector's reach: only a forked process has any
                frozen=gc.get_freeze_count(),
                random=int(np.random.randint(1 << 30)),
                cwd=os.getcwd(),
                argv0=sys.argv[0],
                cmdline=cmdline[:4],
                env={n: os.environ.get(n) for n in parameters.get("names", [])},
            )
