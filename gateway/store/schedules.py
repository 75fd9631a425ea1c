"""Recurring schedules in the store: runs per zone (the cursor), their claims, paused schedules.

A run row is created by an `INSERT … ON CONFLICT DO NOTHING` on (schedule, timezone,
occurrence), so of two schedulers reaching the same occurrence exactly one starts it. The
winner holds a lease it renews after every page of users; a scheduler that dies leaves a
`running` row whose lease runs out, and the next pass resumes it after `after_user`. The
intents' idempotency keys make the page that was in flight safe to submit again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.cron import Occurrence
from gateway.ids import new_id
from gateway.store.database import Database
from gateway.store.tables import ScheduleRunRow, ScheduleStateRow, UserRow

runs = ScheduleRunRow.__table__  # type: ignore[attr-defined]
states = ScheduleStateRow.__table__  # type: ignore[attr-defined]
users = UserRow.__table__  # type: ignore[attr-defined]

FINAL = ("done", "missed", "paused")


@dataclass(frozen=True, slots=True)
class Run:
    id: str
    schedule: str
    timezone: str
    occurrence: dt.datetime
    local: str
    status: str
    after_user: str | None
    users: int
    fired: int
    failed: int
    detail: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ScheduleState:
    paused: bool
    changed_by: str | None
    changed_at: dt.datetime
    first_seen: dt.datetime


def _run(row: Any) -> Run:
    return Run(
        id=row.id,
        schedule=row.schedule,
        timezone=row.timezone,
        occurrence=row.occurrence,
        local=row.local,
        status=row.status,
        after_user=row.after_user,
        users=row.users,
        fired=row.fired,
        failed=row.failed,
        detail=row.detail,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _insert_ignoring_duplicates(connection: AsyncConnection, values: list[dict[str, Any]]) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(runs).values(values).on_conflict_do_nothing()


class ScheduleStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    # -- zones and users --

    async def zones(self, default_zone: str) -> list[str]:
        """Every zone a user is in (a user without one is in the policy's default zone)."""
        zone = sa.func.coalesce(users.c.timezone, default_zone)
        async with self.database.connect() as connection:
            return sorted({r[0] for r in await connection.execute(sa.select(zone).distinct())})

    async def users_page(self, zone: str, default_zone: str, after: str | None, limit: int) -> list[str]:
        """The next page of user ids in a zone, in id order (keyset paging: no offsets, no memory)."""
        query = (
            sa.select(users.c.user_id)
            .where(sa.func.coalesce(users.c.timezone, default_zone) == zone)
            .order_by(users.c.user_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(users.c.user_id > after)
        async with self.database.connect() as connection:
            return [r.user_id for r in await connection.execute(query)]

    # -- runs --

    async def cursor(self, schedule: str, zone: str) -> tuple[dt.datetime | None, list[Run]]:
        """The newest occurrence handled in a zone, and the runs there still `running`."""
        async with self.database.connect() as connection:
            newest = await connection.scalar(
                sa.select(sa.func.max(runs.c.occurrence)).where(
                    runs.c.schedule == schedule, runs.c.timezone == zone
                )
            )
            open_runs = [
                _run(r)
                for r in await connection.execute(
                    sa.select(runs)
                    .where(runs.c.schedule == schedule, runs.c.timezone == zone, runs.c.status == "running")
                    .order_by(runs.c.occurrence)
                )
            ]
        if isinstance(newest, dt.datetime) and newest.tzinfo is None:  # SQLite's max() skips the type
            newest = newest.replace(tzinfo=dt.UTC)
        elif isinstance(newest, str):
            newest = dt.datetime.fromisoformat(newest).replace(tzinfo=dt.UTC)
        return newest, open_runs

    async def record(
        self,
        schedule: str,
        zone: str,
        occurrences: Sequence[Occurrence],
        status: str,
        now: dt.datetime,
        detail: str | None = None,
    ) -> None:
        """Occurrences that will not fire (missed, or paused), recorded so the cursor moves on."""
        if not occurrences:
            return
        rows = [
            {
                "id": new_id("sr"),
                "schedule": schedule,
                "timezone": zone,
                "occurrence": o.at,
                "local": o.key,
                "status": status,
                "users": 0,
                "fired": 0,
                "failed": 0,
                "detail": detail if i == len(occurrences) - 1 else None,
                "started_at": now,
                "finished_at": now,
            }
            for i, o in enumerate(occurrences)
        ]
        async with self.database.begin() as connection:
            await connection.execute(_insert_ignoring_duplicates(connection, rows))

    async def start(
        self,
        schedule: str,
        zone: str,
        occurrence: Occurrence,
        owner: str,
        until: dt.datetime,
        now: dt.datetime,
    ) -> Run | None:
        """Start a run for an occurrence; None when another scheduler already has."""
        row = {
            "id": new_id("sr"),
            "schedule": schedule,
            "timezone": zone,
            "occurrence": occurrence.at,
            "local": occurrence.key,
            "status": "running",
            "users": 0,
            "fired": 0,
            "failed": 0,
            "lease_owner": owner,
            "lease_until": until,
            "started_at": now,
        }
        async with self.database.begin() as connection:
            inserted = await connection.execute(
                _insert_ignoring_duplicates(connection, [row]).returning(runs.c.id)
            )
            if inserted.first() is None:
                return None
            found = (await connection.execute(sa.select(runs).where(runs.c.id == row["id"]))).one()
        return _run(found)

    async def claim(self, run_id: str, owner: str, until: dt.datetime, now: dt.datetime) -> Run | None:
        """Take over a `running` run whose lease ran out (or that is already ours)."""
        async with self.database.begin() as connection:
            taken = await connection.execute(
                sa.update(runs)
                .where(
                    runs.c.id == run_id,
                    runs.c.status == "running",
                    sa.or_(
                        runs.c.lease_owner == owner, runs.c.lease_until < now, runs.c.lease_until.is_(None)
                    ),
                )
                .values(lease_owner=owner, lease_until=until)
                .returning(runs.c.id)
            )
            if taken.first() is None:
                return None
            found = (await connection.execute(sa.select(runs).where(runs.c.id == run_id))).one()
        return _run(found)

    async def advance(
        self, run: Run, owner: str, *, after_user: str, seen: int, fired: int, failed: int, until: dt.datetime
    ) -> bool:
        """Record a page as done and renew the lease; False when another scheduler took the run."""
        async with self.database.begin() as connection:
            moved = await connection.execute(
                sa.update(runs)
                .where(runs.c.id == run.id, runs.c.status == "running", runs.c.lease_owner == owner)
                .values(
                    after_user=after_user,
                    users=runs.c.users + seen,
                    fired=runs.c.fired + fired,
                    failed=runs.c.failed + failed,
                    lease_until=until,
                )
            )
        return bool(moved.rowcount)

    async def finish(
        self,
        run_id: str,
        status: str,
        now: dt.datetime,
        *,
        owner: str | None = None,
        detail: str | None = None,
    ) -> bool:
        where = [runs.c.id == run_id, runs.c.status == "running"]
        if owner is not None:
            where.append(runs.c.lease_owner == owner)
        async with self.database.begin() as connection:
            done = await connection.execute(
                sa.update(runs)
                .where(*where)
                .values(status=status, finished_at=now, lease_owner=None, lease_until=None, detail=detail)
            )
        return bool(done.rowcount)

    async def recent(self, schedule: str, limit: int = 10) -> list[Run]:
        async with self.database.connect() as connection:
            return [
                _run(r)
                for r in await connection.execute(
                    sa.select(runs)
                    .where(runs.c.schedule == schedule)
                    .order_by(runs.c.occurrence.desc(), runs.c.timezone)
                    .limit(limit)
                )
            ]

    # -- paused schedules --

    async def states(self) -> dict[str, ScheduleState]:
        async with self.database.connect() as connection:
            return {
                r.schedule: ScheduleState(r.paused, r.changed_by, r.changed_at, r.first_seen)
                for r in await connection.execute(sa.select(states))
            }

    async def set_paused(self, schedule: str, paused: bool, by: str, now: dt.datetime) -> ScheduleState:
        values = {"paused": paused, "changed_by": by, "changed_at": now}
        async with self.database.begin() as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            await connection.execute(
                dialect.insert(states)
                .values(schedule=schedule, first_seen=now, **values)
                .on_conflict_do_update(index_elements=[states.c.schedule], set_=values)
            )
        return ScheduleState(paused, by, now, now)

    async def seen(self, schedules: Sequence[str], now: dt.datetime) -> None:
        """Note when schedules were first seen (their state rows), keeping what is there."""
        if not schedules:
            return
        rows = [
            {"schedule": s, "paused": False, "changed_by": None, "changed_at": now, "first_seen": now}
            for s in schedules
        ]
        async with self.database.begin() as connection:
            dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
            await connection.execute(dialect.insert(states).values(rows).on_conflict_do_nothing())
