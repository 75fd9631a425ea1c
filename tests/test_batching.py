"""`TurnBatch`: the calls of one event-loop turn are processed together, each gets its own answer.
`ThreadLane`: blocking calls run in order on one thread, each caller gets its own answer.
`MicroBatcher`: a stop with grace lets what was submitted land first."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from gateway.batching import MicroBatcher, ThreadLane, TurnBatch


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


async def test_a_lane_runs_every_call_in_order_on_one_thread_each_answered_apart() -> None:
    lane = ThreadLane("test-lane")
    ran: list[tuple[int, int]] = []  # (call, thread)

    def work(n: int) -> int:
        time.sleep(0.001)  # blocking, as a file write is: later calls queue up meanwhile
        ran.append((n, threading.get_ident()))
        if n == 7:
            raise ValueError("seven")
        return n * n

    try:
        answers = await asyncio.gather(*(lane.call(work, n) for n in range(40)), return_exceptions=True)
    finally:
        lane.close()
    assert [n for n, _ in ran] == list(range(40))
    assert len({thread for _, thread in ran}) == 1
    assert threading.get_ident() not in {thread for _, thread in ran}
    assert isinstance(answers[7], ValueError)
    assert [a for n, a in enumerate(answers) if n != 7] == [n * n for n in range(40) if n != 7]


async def test_a_closed_lane_finishes_what_it_holds_and_its_thread_ends() -> None:
    lane = ThreadLane("test-lane-close")
    threads: list[threading.Thread] = []

    def work(n: int) -> int:
        threads.append(threading.current_thread())
        return n

    calls = [lane.call(work, n) for n in range(5)]
    lane.close()
    assert list(await asyncio.gather(*calls)) == [0, 1, 2, 3, 4]
    threads[0].join(timeout=5)
    assert not threads[0].is_alive()
    assert await lane.call(work, 5) == 5  # a later call starts a new thread, with a queue of its own
    assert threads[-1] is not threads[0]
    lane.close()
    threads[-1].join(timeout=5)
    assert not threads[-1].is_alive()


async def test_a_micro_batcher_stopped_with_grace_processes_what_was_submitted_first() -> None:
    """A worker's stop: the batch in flight finishes and what waits behind it is processed,
    even for callers that stopped waiting (a cancelled job's claim lands, and is handled)."""
    release = asyncio.Event()
    processed: list[list[int]] = []

    async def slow(items: list[int]) -> list[int | BaseException]:
        await release.wait()
        processed.append(items)
        return [2 * i for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(slow, name="slow")
    await batcher.start()
    first = batcher.put(1)
    await asyncio.sleep(0.01)  # the first batch is in flight, waiting for `release`
    abandoned = batcher.put(2)
    abandoned.cancel()  # its caller went away; the item is processed all the same
    later = batcher.put(3)
    asyncio.get_running_loop().call_later(0.05, release.set)
    await batcher.stop(grace=5.0)
    assert processed == [[1], [2, 3]]
    assert (await first, await later) == (2, 6)
    assert batcher.submitted == 3


async def test_a_micro_batcher_stopped_without_grace_fails_what_waits() -> None:
    async def never(items: list[int]) -> list[int | BaseException]:
        await asyncio.Event().wait()
        return list(items)

    batcher: MicroBatcher[int, int] = MicroBatcher(never, name="never")
    await batcher.start()
    waiting = batcher.put(1)
    await asyncio.sleep(0.01)
    await batcher.stop(grace=0.05)  # the grace runs out: the batch in flight is cut off
    with pytest.raises(RuntimeError, match="never stopped"):
        await waiting
