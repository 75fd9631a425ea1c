"""SqlRecipients: users as `UserState`, replaced whole, with unusable addresses left out."""

from __future__ import annotations

import msgspec
import pytest
import sqlalchemy as sa

from gateway.model import Contacts, Device, Preference, QuietHours, UserState
from gateway.store.database import Database
from gateway.store.recipients import SqlRecipients, _assembled, _rows, _sqlite_rows
from gateway.store.tables import ContactRow, DeviceRow, PreferenceRow
from tests.store.rows import T0, count, select

CONTACTS = ContactRow.__table__  # type: ignore[attr-defined]
DEVICES = DeviceRow.__table__  # type: ignore[attr-defined]
PREFERENCES = PreferenceRow.__table__  # type: ignore[attr-defined]

ADA = UserState(
    user_id="u_ada",
    timezone="Europe/Paris",
    locale="fr-FR",
    contacts=Contacts(
        email="ada@example.com",
        phone="+33612345678",
        webhook="https://hooks.example.com/ada",
        devices=[
            Device(platform="ios", token="ios-token-1"),
            Device(platform="android", token="android-token-2", active=False),
            Device(platform="web", token="web-token-3"),
        ],
    ),
    preferences=[
        Preference(event="marketing.*", enabled=False),
        Preference(event="order.*", channel="sms", enabled=False),
        Preference(event="order.shipped", channel="push", frequency_cap=3),
        Preference(event="*", channel="email", enabled=True, frequency_cap=0),
    ],
    quiet_hours=QuietHours(start="22:00", end="07:30"),
)


@pytest.fixture
def recipients(database: Database) -> SqlRecipients:
    return SqlRecipients(database)


async def test_a_full_user_round_trips(recipients: SqlRecipients) -> None:
    assert await recipients.get_user("u_ada") is None
    assert await recipients.put_user(ADA, T0) is True
    assert await recipients.get_user("u_ada") == ADA
    assert await recipients.put_user(ADA, T0) is False  # replaced, not created
    assert await recipients.get_user("u_ada") == ADA


async def test_a_minimal_user_round_trips(recipients: SqlRecipients) -> None:
    bare = UserState(user_id="u_bare")
    assert await recipients.put_user(bare, T0) is True
    assert await recipients.get_user("u_bare") == bare


async def test_replacing_a_user_drops_what_is_not_given(
    database: Database, recipients: SqlRecipients
) -> None:
    await recipients.put_user(ADA, T0)
    reordered = msgspec.structs.replace(
        ADA, contacts=msgspec.structs.replace(ADA.contacts, devices=ADA.contacts.devices[::-1])
    )
    await recipients.put_user(reordered, T0)
    assert await recipients.get_user("u_ada") == reordered  # devices keep the order given
    smaller = UserState(
        user_id="u_ada",
        contacts=Contacts(email="ada@example.com", devices=[Device(platform="web", token="web-token-3")]),
        preferences=[Preference(event="order.*", channel="push", enabled=False)],
    )
    assert await recipients.put_user(smaller, T0) is False
    assert await recipients.get_user("u_ada") == smaller
    # Gone from the store, not merely hidden.
    assert {r.kind for r in await select(database, CONTACTS, CONTACTS.c.user_id == "u_ada")} == {"email"}
    assert [r.token for r in await select(database, DEVICES, DEVICES.c.user_id == "u_ada")] == ["web-token-3"]
    assert await count(database, PREFERENCES, PREFERENCES.c.user_id == "u_ada") == 1

    await recipients.put_user(UserState(user_id="u_ada"), T0)
    assert await recipients.get_user("u_ada") == UserState(user_id="u_ada")
    for table in (CONTACTS, DEVICES, PREFERENCES):
        assert await count(database, table) == 0


async def test_get_users_loads_many_users_in_one_call(database: Database, recipients: SqlRecipients) -> None:
    people = [
        msgspec.structs.replace(
            ADA,
            user_id=f"u_{i:02d}",
            contacts=msgspec.structs.replace(
                ADA.contacts,
                email=f"user{i}@example.com",
                devices=[Device(platform="ios", token=f"tok-{i}-{n}") for n in range(i % 3)],
            ),
            preferences=ADA.preferences[: i % 4],
        )
        for i in range(40)
    ]
    for person in people:
        await recipients.put_user(person, T0)

    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    sa.event.listen(database.engine.sync_engine, "before_cursor_execute", seen)
    try:
        found = await recipients.get_users([p.user_id for p in people] + ["u_nobody", "u_00"])
    finally:
        sa.event.remove(database.engine.sync_engine, "before_cursor_execute", seen)
    assert found == {p.user_id: p for p in people}  # the unknown one is simply absent
    # users, contacts, devices, preferences; on SQLite the four as one, on the driver
    assert len(statements) == (0 if database.dialect == "sqlite" else 4), statements
    assert await recipients.get_users([]) == {}
    assert await recipients.get_users(["u_nobody"]) == {}


async def test_a_deactivated_device_is_reported_inactive_until_registered_again(
    recipients: SqlRecipients,
) -> None:
    await recipients.put_user(ADA, T0)
    await recipients.deactivate_device("u_ada", "ios-token-1", "unregistered", T0)
    user = await recipients.get_user("u_ada")
    assert user is not None
    assert [(d.token, d.active) for d in user.contacts.devices] == [
        ("ios-token-1", False),
        ("android-token-2", False),
        ("web-token-3", True),
    ]
    assert [d.token for d in user.contacts.active_devices()] == ["web-token-3"]
    # PUTting the same user again does not revive a token a provider reported gone...
    await recipients.put_user(ADA, T0)
    assert [d.token for d in (await recipients.get_user("u_ada")).contacts.active_devices()] == [  # type: ignore[union-attr]
        "web-token-3"
    ]
    # ...registering it again does.
    assert await recipients.add_device("u_ada", Device(platform="ios", token="ios-token-1"), T0) is False
    assert [d.token for d in (await recipients.get_user("u_ada")).contacts.active_devices()] == [  # type: ignore[union-attr]
        "ios-token-1",
        "web-token-3",
    ]


async def test_a_batch_is_stored_as_its_users_put_one_after_another(recipients: SqlRecipients) -> None:
    """`put_users` (an import) writes a batch with a few statements per table; what it stores,
    and counts as new, is what putting each user in turn does, a user given twice included."""
    moved = msgspec.structs.replace(
        ADA,
        contacts=msgspec.structs.replace(
            ADA.contacts, email="ada@new.example.com", devices=[Device(platform="ios", token="ios-token-1")]
        ),
        preferences=[],
    )
    bob = UserState(
        user_id="u_bob", contacts=Contacts(phone="+33612345678"), preferences=[Preference(event="order.*")]
    )
    batch = [ADA, bob, moved, UserState(user_id="u_bare"), moved, ADA]
    ids = ["u_ada", "u_bob", "u_bare"]

    async def ada_with_a_bounce_and_a_dead_token() -> None:
        for user_id in ids:
            await recipients.delete_user(user_id)
        await recipients.put_user(ADA, T0)
        await recipients.mark_contact("u_ada", "email", "ada@example.com", "bounced", "hard bounce", T0)
        await recipients.deactivate_device("u_ada", "ios-token-1", "unregistered", T0)

    await ada_with_a_bounce_and_a_dead_token()
    new_one_by_one = [await recipients.put_user(user, T0) for user in batch]
    one_by_one = await recipients.get_users(ids)
    await ada_with_a_bounce_and_a_dead_token()
    assert await recipients.put_users(batch, T0) == sum(new_one_by_one) == 2
    assert await recipients.get_users(ids) == one_by_one
    ada = one_by_one["u_ada"]
    # The last copy won, and its email is usable again: it changed in between (a batch
    # written as one round would have found the bounced address unchanged).
    assert ada.contacts.email == "ada@example.com" and ada.preferences == ADA.preferences
    first = ada.contacts.devices[0]
    assert (first.token, first.active) == ("ios-token-1", False)  # still dead


async def test_a_marked_contact_is_left_out(database: Database, recipients: SqlRecipients) -> None:
    await recipients.put_user(ADA, T0)
    await recipients.mark_contact("u_ada", "phone", "+33612345678", "invalid", "not a mobile number", T0)
    # Marking an address that is no longer the stored one changes nothing.
    await recipients.mark_contact("u_ada", "email", "old@example.com", "bounced", "hard bounce", T0)
    user = await recipients.get_user("u_ada")
    assert user is not None
    assert user.contacts == msgspec.structs.replace(ADA.contacts, phone=None)
    (phone,) = await select(database, CONTACTS, CONTACTS.c.kind == "phone")
    assert (phone.value, phone.status, phone.reason) == ("+33612345678", "invalid", "not a mobile number")
    # Still marked when another user is loaded alongside.
    await recipients.put_user(UserState(user_id="u_bob", contacts=Contacts(phone="+33612345678")), T0)
    both = await recipients.get_users(["u_ada", "u_bob"])
    assert (both["u_ada"].contacts.phone, both["u_bob"].contacts.phone) == (None, "+33612345678")


async def test_a_bounced_address_stays_out_when_put_again_but_a_new_one_is_usable(
    recipients: SqlRecipients,
) -> None:
    await recipients.put_user(ADA, T0)
    await recipients.mark_contact("u_ada", "email", "ada@example.com", "bounced", "hard bounce", T0)
    assert (await recipients.get_user("u_ada")).contacts.email is None  # type: ignore[union-attr]

    await recipients.put_user(ADA, T0)  # the same address again
    assert (await recipients.get_user("u_ada")).contacts.email is None  # type: ignore[union-attr]

    moved = msgspec.structs.replace(
        ADA, contacts=msgspec.structs.replace(ADA.contacts, email="ada@new.example.com")
    )
    await recipients.put_user(moved, T0)
    assert (await recipients.get_user("u_ada")).contacts.email == "ada@new.example.com"  # type: ignore[union-attr]


async def test_on_sqlite_the_one_statement_reads_what_the_four_queries_read(sqlite_url: str) -> None:
    """`load_users` on SQLite reads every kind of row in one statement on the driver; the
    four SQLAlchemy queries PostgreSQL runs are the reference it must match, row for row."""
    database = Database(sqlite_url)
    recipients = SqlRecipients(database)
    people = [
        ADA,
        UserState(user_id="u_bare"),  # no contacts, devices, preferences nor quiet hours
        UserState(
            user_id="u_zoë",
            timezone="Asia/Kolkata",
            contacts=Contacts(
                phone="+919876543210",
                devices=[Device(platform="android", token=f"t{n}", provider="fcm") for n in (3, 1, 2)]
                + [Device(platform="ios", token="apns-hex", provider="apns")],
            ),
            preferences=[Preference(event=f"order.{n}", channel="push", frequency_cap=n) for n in (9, 0, 4)],
        ),
    ]
    try:
        for person in people:
            await recipients.put_user(person, T0)
        await recipients.deactivate_device("u_zoë", "t1", "unregistered", T0)
        await recipients.mark_contact("u_ada", "email", "ada@example.com", "bounced", "hard bounce", T0)
        ids = ["u_nobody", "u_zoë", "u_ada", "u_bare", "u_ada"]
        async with database.connect() as connection:
            reference = _assembled(await _rows(connection, list(dict.fromkeys(ids))))
            fast = _assembled(await _sqlite_rows(connection, list(dict.fromkeys(ids))))
        assert fast == reference
        assert fast["u_ada"].contacts.email is None  # the bounced address is left out on both
        assert [(d.token, d.active) for d in fast["u_zoë"].contacts.devices] == [
            ("t3", True),
            ("t1", False),
            ("t2", True),
            ("apns-hex", True),
        ]
        assert [p.frequency_cap for p in fast["u_zoë"].preferences] == [9, 0, 4]
        assert fast["u_bare"] == UserState(user_id="u_bare")
    finally:
        await database.dispose()
