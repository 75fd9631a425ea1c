"""Recipients in the store: users with their contacts, devices and preferences.

Read as the contract's `UserState`, which is what decisions take. A contact or device the
providers reported as unusable (invalid number, hard bounce, unregistered token) stays in
the store, marked, and is left out of the `UserState`, so later decisions suppress it as
`no_address`. `put_user` replaces a user whole: that is what `PUT /v1/users/{id}` means.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.model import Contacts, Device, Preference, QuietHours, UserState
from gateway.store.database import Database
from gateway.store.sqlite_writes import sqlite_driver
from gateway.store.tables import ContactRow, DeviceRow, PreferenceRow, UserRow

users = UserRow.__table__  # type: ignore[attr-defined]
contacts = ContactRow.__table__  # type: ignore[attr-defined]
devices = DeviceRow.__table__  # type: ignore[attr-defined]
preferences = PreferenceRow.__table__  # type: ignore[attr-defined]

CONTACT_KINDS = ("email", "phone", "webhook")


class SqlRecipients:
    """Implements `UserDirectory` over the store, plus the writes the API and workers need."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def get_user(self, user_id: str) -> UserState | None:
        async with self.database.connect() as connection:
            return await load_user(connection, user_id)

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        async with self.database.connect() as connection:
            return await load_users(connection, user_ids)

    async def put_user(self, user: UserState, now: dt.datetime) -> bool:
        """Create or replace a user; True when it was created."""
        async with self.database.begin() as connection:
            return await _put_users(connection, [user], now) == 1

    async def put_users(self, batch: Sequence[UserState], now: dt.datetime) -> int:
        """Create or replace many users in one transaction (an import); how many were new."""
        async with self.database.begin() as connection:
            return await _put_users(connection, batch, now)

    async def delete_user(self, user_id: str) -> bool:
        async with self.database.begin() as connection:
            for table in (preferences, devices, contacts):
                await connection.execute(sa.delete(table).where(table.c.user_id == user_id))
            result = await connection.execute(sa.delete(users).where(users.c.user_id == user_id))
            return bool(result.rowcount)

    async def put_preferences(self, user_id: str, rows: Sequence[Preference]) -> bool:
        async with self.database.begin() as connection:
            if not await _exists(connection, user_id):
                return False
            await _replace_preferences(connection, {user_id: rows})
            await _touch(connection, user_id)
            return True

    async def add_device(self, user_id: str, device: Device, now: dt.datetime) -> bool | None:
        """Register (or re-activate) a device; None when the user does not exist."""
        async with self.database.begin() as connection:
            if not await _exists(connection, user_id):
                return None
            updated = await connection.execute(
                sa.update(devices)
                .where(devices.c.user_id == user_id, devices.c.token == device.token)
                .values(
                    platform=device.platform,
                    provider=device.provider,
                    active=device.active,
                    reason=None,
                    updated_at=now,
                )
            )
            if updated.rowcount:
                return False
            await connection.execute(
                sa.insert(devices).values(
                    user_id=user_id,
                    platform=device.platform,
                    token=device.token,
                    provider=device.provider,
                    active=device.active,
                    created_at=now,
                    updated_at=now,
                )
            )
            await _touch(connection, user_id)
            return True

    async def remove_device(self, user_id: str, token: str) -> bool:
        async with self.database.begin() as connection:
            result = await connection.execute(
                sa.delete(devices).where(devices.c.user_id == user_id, devices.c.token == token)
            )
            return bool(result.rowcount)

    async def deactivate_device(self, user_id: str, token: str, reason: str, now: dt.datetime) -> None:
        """A provider said the token is gone for good: later decisions will not count it."""
        async with self.database.begin() as connection:
            await connection.execute(
                sa.update(devices)
                .where(devices.c.user_id == user_id, devices.c.token == token)
                .values(active=False, reason=reason, updated_at=now)
            )

    async def mark_contact(
        self, user_id: str, kind: str, value: str, status: str, reason: str, now: dt.datetime
    ) -> None:
        """Mark an address unusable (invalid, bounced, complained) if it is still the stored one."""
        async with self.database.begin() as connection:
            await connection.execute(
                sa.update(contacts)
                .where(contacts.c.user_id == user_id, contacts.c.kind == kind, contacts.c.value == value)
                .values(status=status, reason=reason, updated_at=now)
            )

    async def set_sms_opt_out(self, phone: str, stopped: bool, reason: str, now: dt.datetime) -> int:
        """The phone's owner texted STOP (`stopped`) or START: mark every stored contact with
        that number `opted_out`, or make it `active` again; how many contacts changed.

        START undoes only an opt-out: a number marked `bounced` or `invalid` for another
        reason stays so. Rows marked before `opted_out` existed carry the 21610 refusal in
        their reason (`unsubscribed` from a send, `error 21610` from a status callback).
        """
        where = [contacts.c.kind == "phone", contacts.c.value == phone]
        if stopped:
            where.append(contacts.c.status == "active")
            values: dict[str, object] = {"status": "opted_out", "reason": reason, "updated_at": now}
        else:
            legacy = sa.and_(
                contacts.c.status == "invalid",
                sa.or_(contacts.c.reason == "unsubscribed", contacts.c.reason.like("%error 21610%")),
            )
            where.append(sa.or_(contacts.c.status == "opted_out", legacy))
            values = {"status": "active", "reason": None, "updated_at": now}
        async with self.database.begin() as connection:
            result = await connection.execute(sa.update(contacts).where(*where).values(**values))
            return int(result.rowcount or 0)


async def load_user(connection: AsyncConnection, user_id: str) -> UserState | None:
    return (await load_users(connection, [user_id])).get(user_id)


# Built once: a statement made per call costs more to construct and key for the compiled
# cache than to run. `ids` expands to the batch's user ids at execution.
_IDS: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
_USERS = sa.select(
    users.c.user_id, users.c.timezone, users.c.locale, users.c.quiet_start, users.c.quiet_end
).where(users.c.user_id.in_(_IDS))
_CONTACTS = sa.select(contacts.c.user_id, contacts.c.kind, contacts.c.value).where(
    contacts.c.user_id.in_(_IDS), contacts.c.status == "active"
)
_DEVICES = (
    sa.select(devices.c.user_id, devices.c.platform, devices.c.token, devices.c.provider, devices.c.active)
    .where(devices.c.user_id.in_(_IDS))
    .order_by(devices.c.id)
)
_PREFERENCES = (
    sa.select(
        preferences.c.user_id,
        preferences.c.event,
        preferences.c.channel,
        preferences.c.enabled,
        preferences.c.frequency_cap,
    )
    .where(preferences.c.user_id.in_(_IDS))
    .order_by(preferences.c.position)
)
# The four as one on SQLite: the ids as one JSON array, each row tagged with its kind (the
# index into `_Rows`), padded to one width, and ordered as the four order theirs (devices by
# id, preferences by position). `_WIDTHS` cuts the padding off again.
_SQLITE_USERS = """
WITH ids(id) AS (SELECT value FROM json_each(?))
SELECT 0, user_id, timezone, locale, quiet_start, quiet_end, 0 FROM users
 WHERE user_id IN (SELECT id FROM ids)
UNION ALL
SELECT 1, user_id, kind, value, NULL, NULL, 0 FROM contacts
 WHERE user_id IN (SELECT id FROM ids) AND status = 'active'
UNION ALL
SELECT 2, user_id, platform, token, provider, active, id FROM devices
 WHERE user_id IN (SELECT id FROM ids)
UNION ALL
SELECT 3, user_id, event, channel, enabled, frequency_cap, position FROM preferences
 WHERE user_id IN (SELECT id FROM ids)
ORDER BY 1, 7
"""
_WIDTHS = tuple(len(query.selected_columns) for query in (_USERS, _CONTACTS, _DEVICES, _PREFERENCES))


async def load_users(connection: AsyncConnection, user_ids: Sequence[str]) -> dict[str, UserState]:
    """Users with their usable contacts, devices and ordered preferences.

    On SQLite in one statement handed to the driver: one hop to aiosqlite's thread instead of
    about sixteen for four queries through SQLAlchemy; at light load, when intake's batches
    hold one intent each, those hops were the largest part of accepting it. Elsewhere in four
    queries. `tests/store/test_recipients.py` holds the two paths to the same answer."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return {}
    if connection.dialect.name == "sqlite":
        return _assembled(await _sqlite_rows(connection, ids))
    return _assembled(await _rows(connection, ids))


class _Rows(NamedTuple):
    """A batch's users as plain tuples, each list in the order the `UserState`s want."""

    users: list[tuple[Any, ...]]  # user id, timezone, locale, quiet start, quiet end
    contacts: list[tuple[Any, ...]]  # user id, kind, value (active ones only)
    devices: list[tuple[Any, ...]]  # user id, platform, token, provider, active
    preferences: list[tuple[Any, ...]]  # user id, event, channel, enabled, frequency cap


async def _rows(connection: AsyncConnection, ids: list[str]) -> _Rows:
    found = [tuple(row) for row in await connection.execute(_USERS, {"ids": ids})]
    if not found:
        return _Rows([], [], [], [])
    known = {"ids": [row[0] for row in found]}
    return _Rows(
        found,
        [tuple(row) for row in await connection.execute(_CONTACTS, known)],
        [tuple(row) for row in await connection.execute(_DEVICES, known)],
        [tuple(row) for row in await connection.execute(_PREFERENCES, known)],
    )


async def _sqlite_rows(connection: AsyncConnection, ids: list[str]) -> _Rows:
    driver = await sqlite_driver(connection)
    out = _Rows([], [], [], [])
    parts = (out.users, out.contacts, out.devices, out.preferences)
    for kind, *row in await driver.execute_fetchall(_SQLITE_USERS, (msgspec.json.encode(ids).decode(),)):
        parts[kind].append(tuple(row[: _WIDTHS[kind]]))
    return out


def _assembled(rows: _Rows) -> dict[str, UserState]:
    addresses: dict[str, dict[str, str]] = {row[0]: {} for row in rows.users}
    for uid, kind, value in rows.contacts:
        addresses[uid][kind] = value
    owned: dict[str, list[Device]] = {uid: [] for uid in addresses}
    for uid, platform, token, provider, active in rows.devices:
        owned[uid].append(Device(platform=platform, token=token, active=bool(active), provider=provider))
    wishes: dict[str, list[Preference]] = {uid: [] for uid in addresses}
    for uid, event, channel, enabled, cap in rows.preferences:
        wishes[uid].append(Preference(event=event, channel=channel, enabled=bool(enabled), frequency_cap=cap))
    return {
        uid: UserState(
            user_id=uid,
            timezone=timezone,
            locale=locale,
            contacts=Contacts(
                email=addresses[uid].get("email"),
                phone=addresses[uid].get("phone"),
                webhook=addresses[uid].get("webhook"),
                devices=owned[uid],
            ),
            preferences=wishes[uid],
            quiet_hours=QuietHours(start=start, end=end) if start is not None and end is not None else None,
        )
        for uid, timezone, locale, start, end in rows.users
    }


async def _put_users(connection: AsyncConnection, batch: Sequence[UserState], now: dt.datetime) -> int:
    """Create or replace each user of `batch` whole; how many were new.

    A few statements per table for the whole batch, not per user: an import of 20,000
    users took minutes one user at a time. A user given twice is written twice, in order,
    as one PUT after another would be: its later copy goes in the next round.
    """
    rounds: list[dict[str, UserState]] = []
    for user in batch:
        free = next((r for r in rounds if user.user_id not in r), None)
        if free is None:
            rounds.append(free := {})
        free[user.user_id] = user
    created = 0
    for round_ in rounds:
        created += await _put_round(connection, round_, now)
    return created


async def _put_round(connection: AsyncConnection, batch: dict[str, UserState], now: dt.datetime) -> int:
    """`_put_users` for users given once each."""
    existing = set(
        await connection.scalars(sa.select(users.c.user_id).where(users.c.user_id.in_(list(batch))))
    )

    def values(user: UserState) -> dict[str, Any]:
        return {
            "timezone": user.timezone,
            "locale": user.locale,
            "quiet_start": user.quiet_hours.start if user.quiet_hours else None,
            "quiet_end": user.quiet_hours.end if user.quiet_hours else None,
            "updated_at": now,
        }

    if new := [u for u in batch.values() if u.user_id not in existing]:
        await connection.execute(
            sa.insert(users), [{"user_id": u.user_id, "created_at": now, **values(u)} for u in new]
        )
    if existing:
        # Keys that name columns are what the UPDATE sets, once per row (executemany).
        await connection.execute(
            sa.update(users).where(users.c.user_id == sa.bindparam("b_user_id")),
            [{"b_user_id": u.user_id, **values(u)} for u in batch.values() if u.user_id in existing],
        )
    await _replace_contacts(connection, batch, now)
    await _replace_devices(connection, batch, now)
    await _replace_preferences(connection, {user_id: user.preferences for user_id, user in batch.items()})
    return len(new)


async def _exists(connection: AsyncConnection, user_id: str) -> bool:
    return await connection.scalar(sa.select(users.c.user_id).where(users.c.user_id == user_id)) is not None


async def _touch(connection: AsyncConnection, user_id: str) -> None:
    await connection.execute(
        sa.update(users).where(users.c.user_id == user_id).values(updated_at=dt.datetime.now(dt.UTC))
    )


async def _replace_contacts(
    connection: AsyncConnection, batch: dict[str, UserState], now: dt.datetime
) -> None:
    """Each user's contacts as given; an address kept as it was keeps its bounce or complaint."""
    current = {
        (row.user_id, row.kind): row
        for row in await connection.execute(sa.select(contacts).where(contacts.c.user_id.in_(list(batch))))
    }
    gone: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for user_id, user in batch.items():
        given = {"email": user.contacts.email, "phone": user.contacts.phone, "webhook": user.contacts.webhook}
        for kind in CONTACT_KINDS:
            value, row = given[kind], current.get((user_id, kind))
            if value is None:
                if row is not None:
                    gone.append({"b_user_id": user_id, "b_kind": kind})
            elif row is None:
                added.append(
                    {"user_id": user_id, "kind": kind, "value": value, "status": "active", "updated_at": now}
                )
            elif row.value != value:
                # A new address starts clean.
                changed.append(
                    {
                        "b_user_id": user_id,
                        "b_kind": kind,
                        "value": value,
                        "status": "active",
                        "reason": None,
                        "updated_at": now,
                    }
                )
    one = sa.and_(contacts.c.user_id == sa.bindparam("b_user_id"), contacts.c.kind == sa.bindparam("b_kind"))
    if gone:
        await connection.execute(sa.delete(contacts).where(one), gone)
    if added:
        await connection.execute(sa.insert(contacts), added)
    if changed:
        await connection.execute(sa.update(contacts).where(one), changed)


async def _replace_devices(
    connection: AsyncConnection, batch: dict[str, UserState], now: dt.datetime
) -> None:
    """Store exactly each user's given devices, in the given order.

    A token a provider deactivated stays inactive (with its reason) until it is registered
    again through the devices endpoint: a client re-sending its old list cannot revive it.
    """
    current = {
        (row.user_id, row.token): row
        for row in await connection.execute(sa.select(devices).where(devices.c.user_id.in_(list(batch))))
    }
    await connection.execute(sa.delete(devices).where(devices.c.user_id.in_(list(batch))))
    rows = []
    for user_id, user in batch.items():
        for device in user.contacts.devices:
            row = current.get((user_id, device.token))
            reason = row.reason if row is not None and not row.active else None
            deactivated = reason is not None
            rows.append(
                {
                    "user_id": user_id,
                    "platform": device.platform,
                    "token": device.token,
                    "provider": device.provider,
                    "active": False if deactivated else device.active,
                    "reason": reason,
                    "created_at": row.created_at if row is not None else now,
                    "updated_at": now,
                }
            )
    if rows:
        await connection.execute(sa.insert(devices), rows)


async def _replace_preferences(connection: AsyncConnection, given: dict[str, Sequence[Preference]]) -> None:
    """Each user's preferences as given, in order (the most specific row wins, then the first)."""
    await connection.execute(sa.delete(preferences).where(preferences.c.user_id.in_(list(given))))
    rows = [
        {
            "user_id": user_id,
            "position": i,
            "event": p.event,
            "channel": p.channel,
            "enabled": p.enabled,
            "frequency_cap": p.frequency_cap,
        }
        for user_id, chosen in given.items()
        for i, p in enumerate(chosen)
    ]
    if rows:
        await connection.execute(sa.insert(preferences), rows)
