"""Fan requests out to tasks and their answers back in, each as soon as it is ready.

Both streaming doors use it: the gRPC ``Stream`` (:mod:`meshflow.gateway.server`) and the
GraphQL ``stream`` subscription (:mod:`meshflow.gateway.graphql`). Every item gets exactly one
answer whatever its task raises (``failed`` turns the exception into one), or the caller
would wait for it forever; answers come in the order they are ready, not the items' order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from typing import Any, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class _Done:
    """Put on the queue after the last answer."""


async def fan_out(
    items: AsyncIterable[Item] | Iterable[Item],
    answer: Callable[[Item], Awaitable[Answer]],
    failed: Callable[[Item, Exception], Answer],
    *,
    admit: Callable[[], Awaitable[Any]] | None = None,
    release: Callable[[Any], object] | None = None,
) -> AsyncGenerator[Answer, None]:
    """Yield ``answer(item)`` for every item, or ``failed(item, exc)`` when it raises.

    ``admit`` is awaited before each item's task starts (so a slow consumer of answers holds
    back the reading of items: backpressure) and ``release`` called with what it returned
    when the task ends, also when it is cancelled before it started. Closing the generator
    cancels what still runs.
    """
    answers: asyncio.Queue[Answer | _Done] = asyncio.Queue()
    pending: set[asyncio.Task[None]] = set()

    async def one(item: Item) -> None:
        try:
            result = await answer(item)
        except Exception as exc:  # every item gets an answer, or the caller waits
            result = failed(item, exc)
        answers.put_nowait(result)

    def finished(task: asyncio.Task[None], admitted: Any) -> None:
        # A done callback, not a ``finally`` in ``one``: it also runs for a task cancelled
        # before it started, which never enters its body.
        pending.discard(task)
        if release is not None:
            release(admitted)

    async def start(item: Item) -> None:
        admitted = await admit() if admit is not None else None
        task = asyncio.ensure_future(one(item))
        pending.add(task)
        task.add_done_callback(lambda done: finished(done, admitted))

    async def read() -> None:
        try:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    await start(item)
            else:
                for item in items:
                    await start(item)
            if pending:
                await asyncio.wait(set(pending))
        finally:
            answers.put_nowait(_Done())

    reader = asyncio.ensure_future(read())
    try:
        while not isinstance(result := await answers.get(), _Done):
            yield result
    finally:
        reader.cancel()
        for task in list(pending):
            task.cancel()
