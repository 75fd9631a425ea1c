"""`TurnBatch`: the calls of one event-loop turn are processed together, each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from gateway.batching import TurnBatch


class Doubler:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await asyncio.sleep(0)
        return [2 * i for i in items]


async def test_the_calls_of_one_turn_make_one_batch_in_order() -> None:
    process = Doubler()
    batch = TurnBatch(process)
    answers = await asyncio.gather(*(batch.submit(i) for i in range(5)))
    assert answers == [0, 2, 4, 6, 8]
    assert process.batches == [[0, 1, 2, 3, 4]]


async def test_a_later_turn_makes_a_batch_of_its_own() -> None:
    process = Doubler()
    batch = TurnBatch(process)
    assert await batch.submit(1) == 2
    assert list(await asyncio.gather(batch.submit(2), batch.submit(3))) == [4, 6]
    assert process.batches == [[1], [2, 3]]


async def test_tasks_woken_together_share_a_batch() -> None:
    """The shape the guard relies on: deliveries released by one claim commit admit together."""
    process = Doubler()
    batch = TurnBatch(process)
    go = asyncio.Event()

    async def caller(i: int) -> int:
        await go.wait()
        return await batch.submit(i)

    callers = [asyncio.create_task(caller(i)) for i in range(4)]
    await asyncio.sleep(0)
    go.set()
    assert await asyncio.gather(*callers) == [0, 2, 4, 6]
    assert process.batches == [[0, 1, 2, 3]]


async def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_runs() -> None:
    calls: list[list[str]] = []

    async def process(items: list[str]) -> list[str]:
        calls.append(items)
        if "bad" in items:
            raise ConnectionError("away")
        return items

    batch = TurnBatch(process)
    results = await asyncio.gather(batch.submit("a"), batch.submit("bad"), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert await batch.submit("c") == "c"


def test_a_batch_left_behind_by_a_closed_loop_does_not_hold_up_the_next_loop() -> None:
    process = Doubler()
    batch = TurnBatch(process)

    loop = asyncio.new_event_loop()

    async def submit_and_stop() -> None:
        batch.submit(1)
        loop.stop()  # the loop stops, then closes, before the batch is launched

    task = loop.create_task(submit_and_stop())
    loop.run_forever()
    assert task.done()
    loop.close()

    async def submit() -> int:
        return await batch.submit(5)

    assert asyncio.run(submit()) == 10
    assert process.batches == [[5]]


async def test_a_caller_that_stops_waiting_does_not_break_the_batch() -> None:
    process = Doubler()
    batch = TurnBatch(process)
    first, second = batch.submit(1), batch.submit(2)
    first.cancel()
    assert await second == 4
    with pytest.raises(asyncio.CancelledError):
        await first
