"""The store's tables (SQLModel), the same on SQLite and PostgreSQL.

Schema changes go through migrations (`gateway/store/migrations/versions`), never through
`create_all`: a table added here without a migration fails `tests/store/test_migrations.py`.

Every timestamp is an aware UTC datetime in Python; `UTCDateTime` stores it as naive UTC on
SQLite (which has no time zones) and as `timestamptz` on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the store takes aware datetimes only")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _time(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


def _json(*, nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(sa.JSON(), nullable=nullable))


def _when_set(name: str, column: str, *more: str) -> sa.Index:
    """An index of the rows whose `column` is set (migration 0014). Most rows leave it NULL
    (a bulk id, a batch key, a group), and a full index would still take an entry for each of
    them at every insert and at every status change; the lookups are all `column = value`,
    which both databases know implies `IS NOT NULL`."""
    condition = sa.text(f"{column} IS NOT NULL")
    return sa.Index(name, column, *more, sqlite_where=condition, postgresql_where=condition)


class NotificationRow(SQLModel, table=True):
    """An accepted intent and what was decided for it."""

    __tablename__ = "notifications"
    __table_args__ = (
        sa.Index(
            "ix_notifications_undecided",
            "created_at",
            postgresql_where=sa.text("status = 'undecided'"),
            sqlite_where=sa.text("status = 'undecided'"),
        ),
        _when_set("ix_notifications_bulk_id", "bulk_id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    event: str = Field(max_length=128)
    user_id: str = Field(max_length=128, index=True)
    priority: str = Field(max_length=8)
    data: dict[str, Any] = _json()
    channels: list[str] | None = _json(nullable=True)
    locale: str | None = Field(default=None, max_length=35)
    send_at: dt.datetime | None = _time(nullable=True)
    idempotency_key: str | None = Field(default=None, max_length=400)
    producer: str = Field(max_length=64)
    # "decided", or "undecided" while Redis (history, caps) was unreachable at intake.
    status: str = Field(max_length=16)
    category: str | None = Field(default=None, max_length=64)
    tier: str | None = Field(default=None, max_length=64)
    rule: str | None = Field(default=None, max_length=64)
    policy_version: str | None = Field(default=None, max_length=64)
    fallback: list[str] | None = _json(nullable=True)
    created_at: dt.datetime = _time(index=True)
    decided_at: dt.datetime | None = _time(nullable=True)
    # The lease of the worker deciding it late (`gateway.store.undecided`), while undecided.
    decide_owner: str | None = Field(default=None, max_length=80)
    decide_until: dt.datetime | None = _time(nullable=True)
    # The bulk request that produced it (`bulk_requests`), for that request's status.
    bulk_id: str | None = Field(default=None, max_length=40)


class BulkRequestRow(SQLModel, table=True):
    """A bulk request, stored whole at once and expanded into notifications by workers.

    `expanded` is the cursor into `user_ids`: the recipients before it are stored (or were
    refused, counted in `refused`). `claim_owner`/`claim_until` lease it to one worker.
    """

    __tablename__ = "bulk_requests"
    __table_args__ = (
        sa.UniqueConstraint("producer", "idempotency_key", name="uq_bulk_requests_producer_key"),
        sa.Index(
            "ix_bulk_requests_unfinished",
            "created_at",
            postgresql_where=sa.text("state <> 'expanded'"),
            sqlite_where=sa.text("state <> 'expanded'"),
        ),
    )

    id: str = Field(primary_key=True, max_length=40)
    producer: str = Field(max_length=64)
    idempotency_key: str | None = Field(default=None, max_length=400)
    event: str = Field(max_length=128)
    priority: str = Field(max_length=8)
    intent: dict[str, Any] = _json()  # the BulkIntent as posted, less `user_ids`
    user_ids: list[str] = _json()
    recipients: int
    expanded: int
    refused: int
    first_refusal: str | None = Field(default=None, max_length=1000)
    state: str = Field(max_length=16)  # "accepted", "expanding", "expanded"
    claim_owner: str | None = Field(default=None, max_length=80)
    claim_until: dt.datetime | None = _time(nullable=True)
    created_at: dt.datetime = _time()
    expanded_at: dt.datetime | None = _time(nullable=True)


def not_indexed(column: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    """`column` as an expression no index serves (`column || ''`), for a term that must only
    narrow what the statement's primary-key term found.

    SQLite keeps no statistics, and its planner takes `status IN (...)` on the status index
    for cheaper than one primary-key search per id of `id IN (...)`: a claim then visited
    every open delivery (every one deferred by quiet hours too), and an outcome every one
    being sent, a cost growing with the table (`tests/store/test_query_plans.py`).
    """
    return column.concat("")


class DeliveryRow(SQLModel, table=True):
    """One channel of a notification: delivered, waiting, on standby, or suppressed."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.Index("ix_deliveries_status_lease", "status", "lease_until"),
        # A batch key with its status: a digest's lookup of its folded messages (`suppressed`)
        # is then two equalities on this index, which SQLite's planner prefers to the one on
        # the status index, where `suppressed` is most of the table (migration 0012).
        _when_set("ix_deliveries_batch_key_status", "batch_key", "status"),
        _when_set("ix_deliveries_grouped_into", "grouped_into"),
    )

    id: str = Field(primary_key=True, max_length=40)
    notification_id: str = Field(max_length=40, index=True, foreign_key="notifications.id")
    user_id: str = Field(max_length=128)
    event: str = Field(max_length=128)
    channel: str = Field(max_length=32)
    # pending, scheduled, sending, retrying, delivered, failed, expired, dead, suppressed, standby
    status: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=32)  # why suppressed, or why failed
    detail: str | None = Field(default=None)
    rule: str | None = Field(default=None, max_length=64)
    tier: str | None = Field(default=None, max_length=64)
    queue: str | None = Field(default=None, max_length=64)
    template: str | None = Field(default=None, max_length=200)
    providers: list[str] | None = _json(nullable=True)
    chain_position: int | None = Field(default=None)  # place in the fallback chain, if on it
    recipients: int = Field(default=0)
    estimated_cost: float = Field(default=0.0)
    fingerprint: str | None = Field(default=None, max_length=80)
    batch_key: str | None = Field(default=None, max_length=300)
    batch_max: int | None = Field(default=None)  # a flush groups at most this many
    batch_closes_at: dt.datetime | None = _time(nullable=True)
    grouped_into: str | None = Field(default=None, max_length=40)  # the delivery that sends it
    send_at: dt.datetime | None = _time(nullable=True)
    expires_at: dt.datetime | None = _time(nullable=True)
    attempts: int = Field(default=0)
    next_attempt_at: dt.datetime | None = _time(nullable=True)
    lease_owner: str | None = Field(default=None, max_length=80)
    lease_until: dt.datetime | None = _time(nullable=True)
    provider: str | None = Field(default=None, max_length=64)
    provider_message_id: str | None = Field(default=None, max_length=200)
    created_at: dt.datetime = _time()
    updated_at: dt.datetime = _time()


class AttemptRow(SQLModel, table=True):
    """One try of one delivery through one provider."""

    __tablename__ = "attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=40, index=True, foreign_key="deliveries.id")
    at: dt.datetime = _time()
    provider: str | None = Field(default=None, max_length=64)
    outcome: str = Field(max_length=16)  # delivered, retryable, permanent, expired, skipped
    error: str | None = Field(default=None)
    provider_message_id: str | None = Field(default=None, max_length=200)
    duration_ms: float | None = Field(default=None)
    segments: int | None = Field(default=None)  # SMS parts the provider billed
    cost: float | None = Field(default=None)  # USD: the provider's price, else the configured cost
    cost_source: str | None = Field(default=None, max_length=16)  # reported | configured
    # Which address the call was for, as `Address.tag` (a hash): push retries skip the
    # devices already reached. None for tries that called no provider, and before 0011.
    recipient: str | None = Field(default=None, max_length=16)


class JobRow(SQLModel, table=True):
    """The outbox: a queue job that must run, written in the transaction that needs it.

    The relay enqueues rows Redis has not taken; a worker deletes a row when its job is
    done, so whatever is here is work not yet finished, whatever Redis forgot.
    """

    __tablename__ = "jobs"
    # The relay's recovery pass reads each queue's oldest due jobs every few seconds: on this
    # index a range read in order, not a scan of every job waiting for its time (migration 0013).
    __table_args__ = (sa.Index("ix_jobs_queue_run_at", "queue", "run_at"),)

    id: str = Field(primary_key=True, max_length=40)
    queue: str = Field(max_length=64)
    deliveries: list[str] = _json()
    priority: int = Field(default=1)  # 0 goes first: the critical tier
    run_at: dt.datetime = _time()
    enqueued_at: dt.datetime | None = _time(nullable=True, index=True)
    created_at: dt.datetime = _time()


class IdempotencyRow(SQLModel, table=True):
    __tablename__ = "idempotency_keys"

    scope: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=400)  # a bulk recipient's: model.recipient_key
    notification_id: str = Field(max_length=40)
    created_at: dt.datetime = _time()


class UserRow(SQLModel, table=True):
    __tablename__ = "users"

    user_id: str = Field(primary_key=True, max_length=128)
    timezone: str | None = Field(default=None, max_length=64)
    locale: str | None = Field(default=None, max_length=35)
    quiet_start: str | None = Field(default=None, max_length=5)
    quiet_end: str | None = Field(default=None, max_length=5)
    created_at: dt.datetime = _time()
    updated_at: dt.datetime = _time()


class ContactRow(SQLModel, table=True):
    """An email address, phone number or webhook URL, and whether it still works."""

    __tablename__ = "contacts"

    user_id: str = Field(primary_key=True, max_length=128, foreign_key="users.user_id")
    kind: str = Field(primary_key=True, max_length=16)  # email, phone, webhook
    value: str = Field(max_length=2048)
    # active, invalid, bounced, complained, opted_out (texted STOP; START makes it active again)
    status: str = Field(default="active", max_length=16)
    reason: str | None = Field(default=None)
    updated_at: dt.datetime = _time()


class DeviceRow(SQLModel, table=True):
    __tablename__ = "devices"
    __table_args__ = (sa.UniqueConstraint("user_id", "token", name="uq_devices_user_token"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=128, index=True, foreign_key="users.user_id")
    platform: str = Field(max_length=16)
    token: str = Field(max_length=4096)
    # Who issued the token: fcm or apns (migration 0010)
    provider: str = Field(default="fcm", max_length=8, sa_column_kwargs={"server_default": "fcm"})
    active: bool = Field(default=True)
    reason: str | None = Field(default=None)  # why deactivated (unregistered token, ...)
    created_at: dt.datetime = _time()
    updated_at: dt.datetime = _time()


class PreferenceRow(SQLModel, table=True):
    __tablename__ = "preferences"

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=128, index=True, foreign_key="users.user_id")
    position: int
    event: str = Field(max_length=128)
    channel: str = Field(max_length=32)
    enabled: bool
    frequency_cap: int | None = Field(default=None)


class DeadLetterRow(SQLModel, table=True):
    __tablename__ = "dead_letters"

    id: str = Field(primary_key=True, max_length=40)
    delivery_id: str = Field(max_length=40, unique=True, foreign_key="deliveries.id")
    notification_id: str = Field(max_length=40)
    user_id: str = Field(max_length=128)
    channel: str = Field(max_length=32)
    error: str | None = Field(default=None)
    attempts: int = Field(default=0)
    created_at: dt.datetime = _time(index=True)
    replayed_at: dt.datetime | None = _time(nullable=True)
    replay_delivery_id: str | None = Field(default=None, max_length=40)


class ApiKeyRow(SQLModel, table=True):
    """A producer's key: stored as a SHA-256 of its secret, scoped to events and admin rights."""

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=64, unique=True)
    secret_hash: str = Field(max_length=64)
    events: list[str] = _json()
    admin: bool = Field(default=False)
    rate: float = Field(default=100.0)  # intents per second
    burst: int = Field(default=200)
    created_at: dt.datetime = _time()
    revoked_at: dt.datetime | None = _time(nullable=True)


class InboxItemRow(SQLModel, table=True):
    """One in-app message in a user's inbox, keyed by the delivery that wrote it.

    No foreign keys: the inbox is the user's to read, archive and keep, on its own lifecycle;
    pruning old notifications and deliveries must not empty it.
    """

    __tablename__ = "inbox_items"

    id: str = Field(primary_key=True, max_length=40)  # the delivery id: a repeat send adds nothing
    notification_id: str = Field(max_length=40)
    user_id: str = Field(max_length=128)
    event: str = Field(max_length=128)
    category: str | None = Field(default=None, max_length=64)
    title: str
    body: str
    action_url: str | None = Field(default=None, max_length=2048)
    icon: str | None = Field(default=None, max_length=2048)
    data: dict[str, Any] = _json()
    created_at: dt.datetime = _time()
    read_at: dt.datetime | None = _time(nullable=True)
    archived_at: dt.datetime | None = _time(nullable=True)


_inbox = InboxItemRow.__table__  # type: ignore[attr-defined]
# The feed, newest first, paged by the cursor (created_at, id).
sa.Index("ix_inbox_items_feed", _inbox.c.user_id, _inbox.c.created_at.desc(), _inbox.c.id)
# Unread counts: only the items still unread and not archived are indexed.
sa.Index(
    "ix_inbox_items_unread",
    _inbox.c.user_id,
    sqlite_where=sa.and_(_inbox.c.read_at.is_(None), _inbox.c.archived_at.is_(None)),
    postgresql_where=sa.and_(_inbox.c.read_at.is_(None), _inbox.c.archived_at.is_(None)),
)

METADATA = SQLModel.metadata


class DeliveryEventRow(SQLModel, table=True):
    """What a provider reported about a message after it took it: delivered, opened, bounced...

    One row per provider event, stored once however often the provider retries its webhook
    (`dedup_key` is unique). No foreign key: an event may name a delivery we never had (or
    have pruned), and the record of what a provider said must outlive our own rows.
    """

    __tablename__ = "delivery_events"

    id: int | None = Field(default=None, primary_key=True)
    dedup_key: str = Field(max_length=200, unique=True)  # e.g. `sendgrid:<sg_event_id>`
    delivery_id: str | None = Field(default=None, max_length=40, index=True)  # None: not ours, or unknown
    provider: str = Field(max_length=64)
    provider_message_id: str | None = Field(default=None, max_length=200, index=True)
    # sent, delivered, opened, clicked, bounced, soft_bounced, failed, dropped, complained,
    # unsubscribed, deferred
    type: str = Field(max_length=16)
    detail: str | None = Field(default=None)  # the provider's reason or code, address masked
    occurred_at: dt.datetime = _time()  # when the provider says it happened
    received_at: dt.datetime = _time()  # when we stored it


class ScheduleRunRow(SQLModel, table=True):
    """One occurrence of a recurring schedule in one time zone: fired, being fired, or missed.

    The newest row per (schedule, timezone) is that zone's cursor: a worker down at 09:00
    finds the occurrences after it on restart. The unique key makes the row the claim: two
    schedulers never both start the same occurrence; a run cut short is resumed after
    `after_user` once its lease expires (the intents' idempotency keys make that safe).
    """

    __tablename__ = "schedule_runs"
    __table_args__ = (
        sa.UniqueConstraint("schedule", "timezone", "occurrence", name="uq_schedule_runs_occurrence"),
    )

    id: str = Field(primary_key=True, max_length=40)
    schedule: str = Field(max_length=64)
    timezone: str = Field(max_length=64)
    occurrence: dt.datetime = _time()
    local: str = Field(max_length=40)  # the local time with its offset, as in the idempotency keys
    status: str = Field(max_length=16)  # running, done, missed, paused
    after_user: str | None = Field(default=None, max_length=128)  # the last user id handled
    users: int = Field(default=0)  # users of the zone looked at
    fired: int = Field(default=0)  # intents accepted (replays included)
    failed: int = Field(default=0)  # intents intake refused
    detail: str | None = Field(default=None)
    lease_owner: str | None = Field(default=None, max_length=80)
    lease_until: dt.datetime | None = _time(nullable=True)
    started_at: dt.datetime = _time()
    finished_at: dt.datetime | None = _time(nullable=True)


class ScheduleStateRow(SQLModel, table=True):
    """A schedule paused (or resumed) over the API: the policy defines it, the database holds it off."""

    __tablename__ = "schedule_states"

    schedule: str = Field(primary_key=True, max_length=64)
    paused: bool = Field(default=False)
    changed_by: str | None = Field(default=None, max_length=64)
    changed_at: dt.datetime = _time()
    # When a scheduler first saw the schedule: a zone without runs yet starts from here, so an
    # occurrence the workers were all down for is recorded missed, not silently skipped.
    first_seen: dt.datetime = _time()
