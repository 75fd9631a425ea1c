"""Provisional reservations in a real Redis, settled against a real store (SQLite and PostgreSQL).

Two processes are played by two `RedisHistory` objects with their own owner ids over the
same Redis and database. "Committing" an intent is storing its notification and delivery
rows; a process "dies" when its heartbeat key goes, as its 5-second TTL would make it go.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from gateway.history import PROVISIONAL_FOR, RedisHistory, Reservation, Verdict
from gateway.ids import new_id
from gateway.policy.compiled import Cap, Origin
from gateway.services import Services
from tests.store.rows import DELIVERIES, NOTIFICATIONS, delivery_row, insert, notification_row

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
PUSH_CAP = Cap(
    name="push_per_hour",
    category=None,
    channels=frozenset({"push"}),
    events=None,
    limit=1,
    window=dt.timedelta(hours=1),
    overflow="suppress",
    origin=Origin("policies/defaults.yaml", 1),
)


def shipped(
    notification_id: str | None = None,
    *,
    identity: str = "",
    fingerprint: str = "fp-A-1001",
    cap: bool = False,
) -> Reservation:
    """A push of order A-1001's shipping notice, with a 10-minute dedup window."""
    return Reservation(
        delivery_id=new_id("d"),
        notification_id=notification_id or new_id("n"),
        event="order.shipped",
        channel="push",
        category="transactional",
        priority="normal",
        fingerprint=fingerprint,
        at=NOW,
        dedup=dt.timedelta(minutes=10),
        caps=[PUSH_CAP] if cap else [],
        identity=identity,
    )


@pytest.fixture
def other(services: Services) -> Iterator[RedisHistory]:
    """A second process's history over the same Redis and store (not started: it beats only
    when it reserves, and its death is its heartbeat key going)."""
    yield RedisHistory(
        services.redis,
        services.keys,
        services.policy.history_window,
        owner="other-host:4242:abcdef",
        committed=services.writer.committed,
    )


async def commit(services: Services, item: Reservation) -> None:
    """Store the intent a reservation was made for, as the intake's commit does."""
    await insert(services.database, NOTIFICATIONS, notification_row(item.notification_id))
    await insert(
        services.database, DELIVERIES, delivery_row(item.notification_id, item.channel, id=item.delivery_id)
    )


async def die(services: Services, history: RedisHistory) -> None:
    await services.redis.delete(services.keys.owner(history.owner))


async def provisional(services: Services) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = await services.redis.hgetall(services.keys.provisional("u_ada"))  # type: ignore[misc]
    return found


async def test_a_reservation_a_dead_process_never_committed_suppresses_nobody(
    services: Services, other: RedisHistory
) -> None:
    ghost = shipped()
    assert await other.reserve("u_ada", [ghost], NOW) == [Verdict("ok")]
    await die(services, other)  # killed between its reservation and its commit
    later = shipped()
    assert await services.history.reserve("u_ada", [later], NOW) == [Verdict("ok")]
    entries = await services.history.recent("u_ada", NOW)
    assert [e.notification_id for e in entries] == [later.notification_id]  # the ghost is gone


async def test_a_dead_process_reservation_whose_intent_was_stored_still_counts(
    services: Services, other: RedisHistory
) -> None:
    first = shipped()
    await other.reserve("u_ada", [first], NOW)
    await commit(services, first)
    await die(services, other)  # killed after its commit, before confirming
    verdict = await services.history.reserve("u_ada", [shipped()], NOW)
    assert verdict == [Verdict("duplicate", notification_id=first.notification_id)]
    assert first.delivery_id.encode() not in await provisional(services)  # settled: confirmed


async def test_a_live_process_reservation_counts_while_its_commit_is_under_way(
    services: Services, other: RedisHistory
) -> None:
    first = shipped()
    await other.reserve("u_ada", [first], NOW)  # not yet stored, owner alive
    verdict = await services.history.reserve("u_ada", [shipped()], NOW)
    assert verdict == [Verdict("duplicate", notification_id=first.notification_id)]


async def test_a_retry_of_the_same_idempotency_key_is_never_its_own_duplicate(
    services: Services, other: RedisHistory
) -> None:
    """The API died with the first POST in flight: its reservation may still look alive."""
    first = shipped(identity="key-1", cap=True)
    await other.reserve("u_ada", [first], NOW)
    retry = shipped(identity="key-1", cap=True)
    assert await services.history.reserve("u_ada", [retry], NOW) == [Verdict("ok")]
    # ...and another intent is still held to the dedup window and the cap by both.
    assert (await services.history.reserve("u_ada", [shipped(identity="key-2")], NOW))[0].kind == "duplicate"
    stranger = shipped(identity="key-3", fingerprint="fp-other", cap=True)
    capped = Verdict("capped", cap="push_per_hour")
    assert await services.history.reserve("u_ada", [stranger], NOW) == [capped]


async def test_an_intent_decided_again_is_not_held_to_its_earlier_reservation(
    services: Services, other: RedisHistory
) -> None:
    """A late decision whose lease ran out is decided again by another worker."""
    notification_id = new_id("n")
    await other.reserve("u_ada", [shipped(notification_id, cap=True)], NOW)
    again = shipped(notification_id, cap=True)
    assert await services.history.reserve("u_ada", [again], NOW) == [Verdict("ok")]


async def test_a_cap_is_not_used_up_by_a_dead_process_uncommitted_reservations(
    services: Services, other: RedisHistory
) -> None:
    await other.reserve("u_ada", [shipped(fingerprint="fp-1", cap=True)], NOW)
    await die(services, other)
    assert await services.history.reserve("u_ada", [shipped(fingerprint="fp-2", cap=True)], NOW) == [
        Verdict("ok")
    ]


async def test_a_live_process_reservation_unconfirmed_for_too_long_is_checked(
    services: Services, other: RedisHistory
) -> None:
    """An owner alive but whose commit failed and whose release failed too (a Redis blip)."""
    stuck = shipped()
    await other.reserve("u_ada", [stuck], NOW)
    later = NOW + PROVISIONAL_FOR + dt.timedelta(seconds=1)
    await services.redis.set(services.keys.owner(other.owner), b"1")  # still beating
    assert await services.history.reserve("u_ada", [shipped()], later) == [Verdict("ok")]


async def test_confirmed_reservations_outlive_their_process(services: Services, other: RedisHistory) -> None:
    first = shipped()
    await other.start()
    await other.reserve("u_ada", [first], NOW)
    await commit(services, first)
    other.confirm("u_ada", [first])
    await other.stop()  # flushes the confirmation, then stops beating
    assert await provisional(services) == {}
    verdict = await services.history.reserve("u_ada", [shipped()], NOW)
    assert verdict == [Verdict("duplicate", notification_id=first.notification_id)]


async def test_a_released_reservation_leaves_nothing_behind(services: Services) -> None:
    item = shipped()
    await services.history.reserve("u_ada", [item], NOW)
    await services.history.release("u_ada", [item])
    assert await provisional(services) == {}
    assert await services.history.recent("u_ada", NOW) == []


async def test_reading_the_history_settles_suspects_and_keeps_identities(
    services: Services, other: RedisHistory
) -> None:
    stored, ghost = shipped(identity="k-stored"), shipped(fingerprint="fp-ghost")
    await other.reserve("u_ada", [stored, ghost], NOW)
    await commit(services, stored)
    await die(services, other)
    [history] = await services.history.recent_many(["u_ada"], NOW)
    assert [e.notification_id for e in history.entries] == [stored.notification_id]
    assert history.identities == ["k-stored"]
    assert history.for_intent("", "k-stored") == []  # the retry of that key decides without it
    assert await provisional(services) == {}  # the stored one confirmed, the ghost dropped


async def test_many_users_are_read_reserved_and_confirmed_in_one_call_each(
    services: Services, other: RedisHistory
) -> None:
    """One script call serves a batch's users in order: a user named twice sees their first
    request's reservation, and a confirmation of thousands for one user goes in parts."""
    ada, bob = shipped(cap=True), shipped(cap=True, fingerprint="fp-B")
    verdicts = await other.reserve_many(
        [("u_ada", [ada]), ("u_bob", [bob]), ("u_ada", [shipped(cap=True, fingerprint="fp-C")])], NOW
    )
    assert verdicts == [[Verdict("ok")], [Verdict("ok")], [Verdict("capped", cap="push_per_hour")]]
    histories = await other.recent_many(["u_bob", "u_nobody", "u_ada"], NOW)
    assert [[e.notification_id for e in h.entries] for h in histories] == [
        [bob.notification_id],
        [],
        [ada.notification_id],
    ]
    # More than Lua's unpack takes at once (8,000), as if reserved by this process.
    many = [shipped() for _ in range(9000)]
    await services.redis.hset(  # type: ignore[misc]
        services.keys.provisional("u_ada"), mapping={m.delivery_id: f"{other.owner}|1" for m in many}
    )
    assert len(await provisional(services)) == 9001
    await other.start()
    other.confirm("u_ada", [ada, *many])
    other.confirm("u_bob", [bob])
    await other.stop()  # flushes the confirmations
    assert await provisional(services) == {}
    assert await services.redis.hgetall(services.keys.provisional("u_bob")) == {}  # type: ignore[misc]
