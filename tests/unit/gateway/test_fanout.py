"""``fan_out``, the helper behind both streaming doors: one answer per item whatever its task
raises, answers as they are ready, slots admitted and released, tasks cancelled on close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from meshflow.gateway.fanout import fan_out

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(bounded())


def failed(item: int, exc: Exception) -> str:
    return f"{item} failed: {type(exc).__name__}"


def test_every_item_gets_one_answer_whatever_its_task_raises() -> None:
    async def answer(item: int) -> str:
        await asyncio.sleep(0)
        if item % 3 == 1:
            raise ValueError("bad item")
        if item % 3 == 2:
            raise KeyError("a bug")
        return f"{item} ok"

    async def main() -> list[str]:
        return [a async for a in fan_out(range(6), answer, failed)]

    assert sorted(run(main())) == [
        "0 ok",
        "1 failed: ValueError",
        "2 failed: KeyError",
        "3 ok",
        "4 failed: ValueError",
        "5 failed: KeyError",
    ]


def test_answers_come_as_they_are_ready_not_in_item_order() -> None:
    async def main() -> list[str]:
        second_done = asyncio.Event()

        async def answer(item: int) -> str:
            if item == 0:
                await second_done.wait()
            else:
                second_done.set()
            return str(item)

        return [a async for a in fan_out([0, 1], answer, failed)]

    assert run(main()) == ["1", "0"]


def test_no_items_end_the_stream_at_once() -> None:
    async def answer(item: int) -> str:
        raise AssertionError("no item")

    async def main() -> list[str]:
        return [a async for a in fan_out([], answer, failed)]

    assert run(main()) == []


def test_admit_bounds_the_tasks_at_once_and_each_task_releases_its_slot() -> None:
    slots = asyncio.Semaphore(2)
    running: list[int] = []
    most = 0
    released = 0

    async def answer(item: int) -> str:
        nonlocal most
        running.append(item)
        most = max(most, len(running))
        await asyncio.sleep(0.001)
        running.remove(item)
        return str(item)

    def release(_: object) -> None:
        nonlocal released
        released += 1
        slots.release()

    async def main() -> list[str]:
        return [
            a async for a in fan_out(range(8), answer, failed, admit=slots.acquire, release=release)
        ]

    assert sorted(run(main())) == [str(i) for i in range(8)]
    assert most == 2 and released == 8


def test_a_slow_reader_of_answers_holds_back_the_reading_of_items() -> None:
    read: list[int] = []
    slots = asyncio.Semaphore(1)

    async def items() -> AsyncIterator[int]:
        for i in range(5):
            read.append(i)
            yield i

    async def answer(item: int) -> str:
        await asyncio.Event().wait()  # never answers: its slot stays taken
        return str(item)

    async def main() -> None:
        answers = fan_out(
            items(), answer, failed, admit=slots.acquire, release=lambda _: slots.release()
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(anext(answers), 0.05)
        await answers.aclose()

    run(main())
    assert read == [0, 1]  # the second item waits for a slot; nothing past it is read


def test_closing_the_stream_cancels_running_tasks_and_gives_back_their_slots() -> None:
    slots = asyncio.Semaphore(8)
    admitted = 0
    released = 0
    cancelled: list[int] = []

    async def admit() -> int:
        nonlocal admitted
        await slots.acquire()
        admitted += 1
        return admitted

    given_back: list[object] = []

    def release(ticket: object) -> None:
        nonlocal released
        released += 1
        given_back.append(ticket)
        slots.release()

    async def answer(item: int) -> str:
        if item == 0:
            return "first"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(item)
            raise
        return str(item)

    async def main() -> None:
        answers = fan_out(range(4), answer, failed, admit=admit, release=release)
        assert await anext(answers) == "first"
        await answers.aclose()
        for _ in range(10):  # cancelled tasks end on the next turns of the loop
            await asyncio.sleep(0)

    run(main())
    assert sorted(cancelled) == [1, 2, 3]
    assert admitted == released == 4
    assert sorted(given_back) == [1, 2, 3, 4]  # each task gives back what admit gave it
