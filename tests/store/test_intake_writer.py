"""IntakeWriter: idempotency claims and queue jobs, settled per group-committed batch."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import pytest

from gateway.ids import new_id
from gateway.model import BulkIntent
from gateway.store.database import Database
from gateway.store.intake import CommitResult, IntakeWriter, JobSpec, Pending
from tests.conftest import Clock
from tests.store.rows import (
    DELIVERIES,
    IDEMPOTENCY,
    JOBS,
    NOTIFICATIONS,
    T0,
    count,
    delivery_row,
    notification_row,
    select,
)

WINDOW = dt.timedelta(hours=24)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
async def writer(database: Database, clock: Clock) -> AsyncIterator[IntakeWriter]:
    started = IntakeWriter(database, idempotency_window=lambda: WINDOW, clock=clock)
    await started.start()
    yield started
    await started.stop()


def intent(
    key: str | None = None,
    *,
    scope: str = "orders",
    channels: int = 1,
    queue: str = "standard",
    run_at: dt.datetime = T0,
    chunk_size: int = 10,
    priority: int = 1,
) -> Pending:
    notification_id = new_id("n")
    rows = [delivery_row(notification_id, f"channel{i}", queue=queue) for i in range(channels)]
    return Pending(
        notification=notification_row(notification_id, idempotency_key=key, producer=scope),
        deliveries=rows,
        job_specs=[JobSpec(row["id"], queue, run_at, chunk_size, priority) for row in rows],
        idempotency=(scope, key) if key is not None else None,
    )


async def notification_ids(database: Database) -> set[str]:
    return {row.id for row in await select(database, NOTIFICATIONS)}


async def claim_of(database: Database, scope: str, key: str) -> str:
    (row,) = await select(database, IDEMPOTENCY, IDEMPOTENCY.c.scope == scope, IDEMPOTENCY.c.key == key)
    return str(row.notification_id)


async def test_one_key_twice_in_one_batch_stores_the_first_and_replays_the_second(
    database: Database, writer: IntakeWriter
) -> None:
    first, second, other_scope = (
        intent("k-1", channels=2),
        intent("k-1", channels=2),
        intent("k-1", scope="b"),
    )
    results = await asyncio.gather(*(writer.submit(p) for p in (first, second, other_scope)))
    assert writer.commit.commits == 1  # one batch: the duplicate is settled inside it
    first_id = first.notification["id"]
    assert results[0].notification_id == first_id and results[0].replay is False
    assert results[1] == CommitResult(first_id, replay=True)
    assert results[2].notification_id == other_scope.notification["id"] and results[2].replay is False
    assert await notification_ids(database) == {first_id, other_scope.notification["id"]}
    assert await count(database, DELIVERIES, DELIVERIES.c.notification_id == second.notification["id"]) == 0
    jobbed = {d for job in await select(database, JOBS) for d in job.deliveries}
    assert not jobbed & {row["id"] for row in second.deliveries}
    assert await claim_of(database, "orders", "k-1") == first_id


async def test_one_key_in_a_later_batch_is_answered_with_the_first_id(
    database: Database, writer: IntakeWriter, clock: Clock
) -> None:
    first = await writer.submit(intent("k-2"))
    clock.now = T0 + WINDOW - dt.timedelta(seconds=1)  # still inside the window
    again = intent("k-2")
    assert await writer.submit(again) == CommitResult(first.notification_id, replay=True)
    # Two more in one batch, both replays of the stored one.
    twice = await asyncio.gather(writer.submit(intent("k-2")), writer.submit(intent("k-2")))
    assert list(twice) == [CommitResult(first.notification_id, replay=True)] * 2
    assert await notification_ids(database) == {first.notification_id}
    assert await count(database, DELIVERIES) == 1
    assert await count(database, JOBS) == 1
    assert await writer.lookup_key("orders", "k-2", clock()) == first.notification_id


async def test_an_expired_claim_is_taken_over_by_a_new_notification(
    database: Database, writer: IntakeWriter, clock: Clock
) -> None:
    first = await writer.submit(intent("k-3"))
    clock.now = T0 + WINDOW + dt.timedelta(seconds=1)
    assert await writer.lookup_key("orders", "k-3", clock()) is None
    taker, follower = intent("k-3"), intent("k-3")
    results = await asyncio.gather(writer.submit(taker), writer.submit(follower))
    taker_id = taker.notification["id"]
    assert results[0].notification_id == taker_id and results[0].replay is False
    assert results[1] == CommitResult(taker_id, replay=True)
    assert await notification_ids(database) == {first.notification_id, taker_id}
    (claim,) = await select(database, IDEMPOTENCY)
    assert (claim.notification_id, claim.created_at) == (taker_id, clock.now)
    # The new claim runs from the takeover: a minute later it still answers with the taker.
    clock.now += dt.timedelta(minutes=1)
    assert await writer.submit(intent("k-3")) == CommitResult(taker_id, replay=True)


async def test_jobs_are_formed_per_queue_time_and_tier_across_the_batch(
    database: Database, writer: IntakeWriter
) -> None:
    later = T0 + dt.timedelta(hours=1)
    batch = [
        *(intent(channels=5, queue="standard", chunk_size=10) for _ in range(5)),  # 25 together
        intent(channels=4, queue="standard", run_at=later, chunk_size=10),
        intent(channels=3, queue="bulk", chunk_size=10),
        intent(channels=3, queue="critical", chunk_size=1, priority=0),
    ]
    results = await asyncio.gather(*(writer.submit(p) for p in batch))
    assert writer.commit.commits == 1
    assert not any(r.replay for r in results)

    spec_of = {spec.delivery_id: spec for p in batch for spec in p.job_specs}
    rows = await select(database, JOBS)
    sizes: dict[tuple[str, dt.datetime], list[int]] = {}
    for job in rows:
        specs = {spec_of[d] for d in job.deliveries}
        assert len({(s.queue, s.run_at, s.chunk_size, s.priority) for s in specs}) == 1, job
        (spec, *_) = specs
        assert (job.queue, job.run_at, job.priority) == (spec.queue, spec.run_at, spec.priority)
        assert job.enqueued_at is None and job.created_at == T0
        sizes.setdefault((job.queue, job.run_at), []).append(len(job.deliveries))
    assert {group: sorted(s) for group, s in sizes.items()} == {
        ("standard", T0): [5, 10, 10],
        ("standard", later): [4],
        ("bulk", T0): [3],
        ("critical", T0): [1, 1, 1],
    }
    jobbed = Counter(d for job in rows for d in job.deliveries)
    assert set(jobbed) == set(spec_of) and set(jobbed.values()) == {1}  # each delivery in one job

    # Each intent is told the jobs its own deliveries went into, exactly as stored.
    stored = {job.id: (job.queue, list(job.deliveries), job.run_at, job.priority) for job in rows}
    for pending, result in zip(batch, results, strict=True):
        mine = {spec.delivery_id for spec in pending.job_specs}
        assert {job.id for job in result.jobs} == {
            job_id for job_id, (_, ids, _, _) in stored.items() if mine & set(ids)
        }
        for job in result.jobs:
            assert (job.queue, job.deliveries, job.run_at, job.priority) == stored[job.id]


def longest_string(field: str) -> int:
    """The max_length the contract (`BulkIntent`) declares for a string field or its items."""
    info = msgspec.inspect.type_info(BulkIntent)
    assert isinstance(info, msgspec.inspect.StructType)
    (declared,) = [f.type for f in info.fields if f.name == field]
    found = declared.item_type if isinstance(declared, msgspec.inspect.ListType) else declared
    if isinstance(found, msgspec.inspect.UnionType):
        (found,) = [t for t in found.types if isinstance(t, msgspec.inspect.StrType)]
    assert isinstance(found, msgspec.inspect.StrType) and found.max_length is not None
    return found.max_length


async def test_the_longest_key_the_contract_allows_is_claimed_and_replayed(
    database: Database, writer: IntakeWriter
) -> None:
    """A bulk intent claims `<key>:<user_id>` per recipient, each as long as the contract allows."""
    bulk = msgspec.convert(
        {
            "event": "order.shipped",
            "user_ids": ["u" * longest_string("user_ids")],
            "idempotency_key": "k" * longest_string("idempotency_key"),
        },
        BulkIntent,
    )
    (one_recipient,) = bulk.intents()
    key = one_recipient.idempotency_key
    assert key is not None
    long_key, neighbour = intent(key), intent()
    long_key.notification["idempotency_key"] = key
    first, other = await asyncio.gather(writer.submit(long_key), writer.submit(neighbour))
    assert (first.notification_id, first.replay) == (long_key.notification["id"], False)
    assert (other.notification_id, other.replay) == (neighbour.notification["id"], False)
    assert await writer.submit(intent(key)) == CommitResult(first.notification_id, replay=True)
    assert await claim_of(database, "orders", key) == first.notification_id
    (stored,) = await select(database, NOTIFICATIONS, NOTIFICATIONS.c.id == first.notification_id)
    assert stored.idempotency_key == key
