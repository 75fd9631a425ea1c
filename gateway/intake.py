"""Accepting intents: decide, reserve, store, enqueue, in that order, losing nothing.

`Intake.accept()` is what `POST /v1/intents` runs:
1. validate the intent against the policy (unknown channels, unrouted events are 422);
2. take the producer's quota;
3. a replayed idempotency key answers with the first notification's id straight away;
4. decide with the user's stored state and their history from Redis;
5. reserve the deliveries in Redis (atomic dedup and cap check; see `gateway.history`);
6. store notification, deliveries and queue jobs in one (group) commit;
7. hand the jobs to Redis; the relay retries whatever Redis does not take.
Steps 2-5 run for a micro-batch of concurrent intents at once (`gateway.batching`): one
Redis pipeline for their quotas, one query for their keys, one for their users, one
pipeline for their histories and one for their reservations, instead of five round trips
each. Within a batch, intents for the same user are decided in arrival order, each seeing
the deliveries reserved for the ones before it, so a batch decides exactly as the same
intents one after another would. Step 6 is its own group commit, so one batch is being
decided while the previous one is written.

If Redis cannot be reached, the intent is stored `undecided` (still in one commit, still
202) and `decide_pending()` decides it once Redis is back; its expiry runs from when it
was accepted, so a stale OTP is dropped rather than sent late. If the database cannot be
reached, nothing is stored, reservations are released and the caller gets a 503.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway.batching import MicroBatcher
from gateway.decisions import decide_or_reject, validate_intent
from gateway.errors import HistoryUnavailable
from gateway.failpoints import failpoint
from gateway.history import RedisHistory, Reservation, UserHistory, Verdict, identity_of
from gateway.ids import new_id
from gateway.metrics import INTENTS_ACCEPTED, POLICY_EVALUATION
from gateway.model import Decision, Delivery, Intent, Suppression, UserState
from gateway.policy.compiled import Cap, CompiledPolicy, Plan
from gateway.policy.engine import preference_cap
from gateway.queue.dispatch import Dispatcher
from gateway.quota import Quota, QuotaSpec
from gateway.store.database import Database
from gateway.store.grouping import fold_key
from gateway.store.intake import IntakeWriter, JobSpec, Pending
from gateway.store.recipients import SqlRecipients
from gateway.store.undecided import Undecided, UndecidedStore
from gateway.templating.preview import render_messages

log = logging.getLogger("gateway.intake")
# Deciding is synchronous work; a batch hands the event loop back this often, so that an
# urgent intent's commit (or any request) is not held up for a whole batch's worth of it.
YIELD_EVERY = 20


@dataclass(frozen=True, slots=True)
class IntakeResult:
    notification_id: str
    replay: bool
    user_id: str = ""


@dataclass(frozen=True, slots=True)
class IntakeRequest:
    intent: Intent
    producer: str
    quota: QuotaSpec | None = None
    notification_id: str | None = None  # set when deciding an intent stored undecided


@dataclass(slots=True)
class _Staged:
    """A decision turned into rows, with the reservations that made them count."""

    user_id: str
    pending: Pending
    reservations: list[Reservation]

    @property
    def undecided(self) -> bool:
        return bool(self.pending.notification["status"] == "undecided")


@dataclass(slots=True)
class _Reserving:
    """One intent's decision while its deliveries are being reserved.

    A delivery the reservation refuses (a concurrent intent for the same user got there
    first) becomes a suppression; a refused head of a `first` fallback chain passes the
    turn to the next standby, which is then reserved in the next round.
    """

    request: IntakeRequest
    user: UserState
    now: dt.datetime
    decision: Decision
    plan: Plan | None
    ids: dict[str, str]
    delivered: list[Delivery] = field(default_factory=list)
    standby: list[Delivery] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)
    kept: list[Reservation] = field(default_factory=list)
    asking: list[tuple[Delivery, Reservation]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.delivered = list(self.decision.deliveries)
        self.standby = list(self.decision.standby)
        self.suppressed = list(self.decision.suppressed)
        self.ask(self.delivered)

    def ask(self, wanted: Sequence[Delivery]) -> None:
        if self.plan is None:
            return
        r = self.request
        self.asking = [
            (
                d,
                _reservation(
                    d,
                    self.ids[d.channel],
                    r.intent,
                    self.decision,
                    self.plan,
                    self.user,
                    self.now,
                    r.notification_id or "",
                    identity_of(r.producer, r.intent.idempotency_key),
                ),
            )
            for d in wanted
        ]

    def settle(self, verdicts: Sequence[Verdict]) -> None:
        asked, self.asking = self.asking, []
        promoted: list[Delivery] = []
        for (delivery, item), verdict in zip(asked, verdicts, strict=True):
            if verdict.kind == "ok":
                self.kept.append(item)
                continue
            self.delivered.remove(delivery)
            if verdict.kind == "duplicate":
                refusal = Suppression(
                    channel=delivery.channel,
                    reason="duplicate",
                    rule=self.decision.rule,
                    detail=f"an identical message was committed concurrently, "
                    f"as notification {verdict.notification_id}",
                )
            else:
                cap = verdict.cap
                refusal = Suppression(
                    channel=delivery.channel,
                    reason="frequency_capped",
                    rule=cap,
                    detail=f"cap {cap} was reached by a concurrent delivery",
                    digest=self.overflow_digest(delivery.channel, cap),
                )
            self.suppressed.append(refusal)
            if self.standby and delivery.channel in self.decision.fallback:
                promoted.append(self.standby.pop(0))
        self.delivered.extend(promoted)
        self.ask(promoted)

    def overflow_digest(self, channel: str, cap_name: str) -> str | None:
        """Where a message this cap refused folds, as the engine would have said: the rule's
        digest for a cap with `overflow: digest`, and for the user's own preference cap."""
        if self.plan is None:
            return None
        policy_cap = next((c for c in self.plan.caps.get(channel, ()) if c.name == cap_name), None)
        if policy_cap is not None and policy_cap.overflow != "digest":
            return None
        return self.plan.rule.digest

    def final(self) -> Decision:
        decision = self.decision
        if len(self.delivered) == len(decision.deliveries) and self.standby == decision.standby:
            return decision
        refused = {s.channel for s in self.suppressed}
        return msgspec.structs.replace(
            decision,
            deliveries=self.delivered,
            standby=self.standby,
            suppressed=self.suppressed,
            fallback=[c for c in decision.fallback if c not in refused],
        )


class Intake:
    def __init__(
        self,
        *,
        policy: Callable[[], CompiledPolicy],
        database: Database,
        recipients: SqlRecipients,
        history: RedisHistory,
        quota: Quota,
        writer: IntakeWriter,
        dispatcher: Dispatcher,
        clock: Callable[[], dt.datetime],
        owner: str,
        max_batch: int = 200,  # bounds how long an urgent intent waits behind a batch in progress
    ) -> None:
        self.policy = policy
        self.owner = owner  # names this process's claims on undecided intents
        self.undecided = UndecidedStore(database)
        self.database = database
        self.recipients = recipients
        self.history = history
        self.quota = quota
        self.writer = writer
        self.dispatcher = dispatcher
        self.clock = clock
        self.batcher: MicroBatcher[IntakeRequest, IntakeResult | _Staged] = MicroBatcher(
            self._stage_batch, name="intake", max_batch=max_batch
        )

    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def accept(self, intent: Intent, producer: str, quota: QuotaSpec | None = None) -> IntakeResult:
        validate_intent(intent, self.policy())
        urgent = intent.priority == "urgent"  # ahead of queued bulk work, in both batches
        staged = await self.batcher.submit(IntakeRequest(intent, producer, quota), first=urgent)
        if isinstance(staged, IntakeResult):
            return staged
        result = await self._store(staged, first=urgent)
        if not result.replay:
            INTENTS_ACCEPTED.labels(intent.priority).inc()
        return result

    async def accept_many(self, intents: Sequence[Intent], producer: str) -> list[IntakeResult]:
        """Many intents (a bulk request, chunk by chunk), stored through the shared group commits.

        If deciding any of them fails, none is stored. A store failure part-way can leave the
        earlier commits stored: a bulk request with an `idempotency_key` is therefore safe to
        retry, as the retry replays those (`<key>:<user_id>`) and stores the rest.
        """
        policy = self.policy()
        for intent in intents:
            validate_intent(intent, policy)
        outcomes = await self.batcher.submit_many([IntakeRequest(i, producer) for i in intents])
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            for outcome in outcomes:
                if isinstance(outcome, _Staged):
                    await self._release(outcome.user_id, outcome.reservations)
            raise failed
        stored = iter(await asyncio.gather(*(self._store(o) for o in outcomes if isinstance(o, _Staged))))
        results = [o if isinstance(o, IntakeResult) else next(stored) for o in outcomes]
        for intent, result in zip(intents, results, strict=True):
            if not result.replay:
                INTENTS_ACCEPTED.labels(intent.priority).inc()
        return results

    async def _store(self, staged: _Staged, *, first: bool = False) -> IntakeResult:
        try:
            result = await self.writer.submit(staged.pending, first=first)
        except BaseException:
            await self._release(staged.user_id, staged.reservations)
            raise
        if result.replay:
            await self._release(staged.user_id, staged.reservations)
        else:
            self.history.confirm(staged.user_id, staged.reservations)
            self.dispatcher.dispatch(result.jobs)
        return IntakeResult(result.notification_id, result.replay, staged.user_id)

    async def _stage_batch(
        self, requests: list[IntakeRequest]
    ) -> list[IntakeResult | _Staged | BaseException]:
        return await self._stage(requests, self.policy(), self.clock())

    async def _stage(
        self, requests: Sequence[IntakeRequest], policy: CompiledPolicy, now: dt.datetime
    ) -> list[IntakeResult | _Staged | BaseException]:
        """Quota, replays, users, histories, decisions and reservations of a batch, in that order."""
        out: list[IntakeResult | _Staged | BaseException | None] = [None] * len(requests)
        limited = [(i, r.quota) for i, r in enumerate(requests) if r.quota is not None]
        if limited:
            waits = await self.quota.take_many([spec for _, spec in limited])
            for (i, spec), wait in zip(limited, waits, strict=True):
                if wait > 0:
                    out[i] = spec.refusal(wait)
        keyed = [
            (i, (r.producer, key))
            for i, r in enumerate(requests)
            if out[i] is None and r.notification_id is None and (key := r.intent.idempotency_key) is not None
        ]
        if keyed:
            first = await self.writer.lookup_keys([pair for _, pair in keyed], now)
            for i, pair in keyed:
                if (known := first.get(pair)) is not None:
                    out[i] = IntakeResult(known, replay=True, user_id=requests[i].intent.user_id)
        live = [i for i in range(len(requests)) if out[i] is None]
        if live:
            for i, staged in zip(
                live, await self._decide([requests[i] for i in live], policy, now), strict=True
            ):
                out[i] = staged
        return out  # type: ignore[return-value]

    async def _decide(
        self, requests: Sequence[IntakeRequest], policy: CompiledPolicy, now: dt.datetime
    ) -> list[_Staged | BaseException]:
        requests = [
            r if r.notification_id else IntakeRequest(r.intent, r.producer, r.quota, new_id("n"))
            for r in requests
        ]
        user_ids = list(dict.fromkeys(r.intent.user_id for r in requests))
        users = await self.recipients.get_users(user_ids)
        try:
            histories: dict[str, UserHistory] = dict(
                zip(user_ids, await self.history.recent_many(user_ids, now), strict=True)
            )
        except HistoryUnavailable as exc:
            log.warning("Redis unreachable at intake (%s): storing %d intents undecided", exc, len(requests))
            return [_undecided(r, now) for r in requests]
        out: list[_Staged | BaseException | None] = []
        reserving: list[tuple[int, _Reserving]] = []
        for n, r in enumerate(requests, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a batch decides for ~100 µs an intent: let urgent work in
            user_id = r.intent.user_id
            user = users.get(user_id) or UserState(user_id=user_id)
            seen = histories[user_id].for_intent(
                r.notification_id or "", identity_of(r.producer, r.intent.idempotency_key)
            )
            try:
                with POLICY_EVALUATION.time():
                    decision = decide_or_reject(r.intent, user, now, seen, policy)
                render_messages(decision, r.intent, user, policy)  # 422 now, not a failed send later
                rule = policy.rule(decision.rule)
                plan = policy.plan(rule, r.intent.priority) if rule is not None else None
            except Exception as exc:  # one intent's error is that intent's answer
                out.append(exc)
                continue
            # Each channel is delivered at most once per notification: ids by channel, fixed now,
            # name the reservations and then the rows.
            ids = {d.channel: new_id("d") for d in (*decision.deliveries, *decision.standby)}
            work = _Reserving(r, user, now, decision, plan, ids)
            # Later intents of this batch for the same user decide as if this one were sent.
            histories[user_id] = histories[user_id].plus([item for _, item in work.asking])
            reserving.append((len(out), work))
            out.append(None)  # staged once reserved
        try:
            while asking := [w for _, w in reserving if w.asking]:
                verdicts = await self.history.reserve_many(
                    [(w.request.intent.user_id, [item for _, item in w.asking]) for w in asking], now
                )
                for w, answer in zip(asking, verdicts, strict=True):
                    w.settle(answer)
        except HistoryUnavailable as exc:
            log.warning(
                "Redis failed while reserving (%s): storing %d intents undecided", exc, len(reserving)
            )
            for index, w in reserving:
                out[index] = _undecided(w.request, now)
            return out  # type: ignore[return-value]
        failpoint("intake.reserved")  # reserved in Redis, not yet stored: a crash leaves provisional entries
        for n, (index, w) in enumerate(reserving, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            r = w.request
            pending = _rows(r.intent, w.final(), r.notification_id or "", r.producer, now, policy, w.ids)
            out[index] = _Staged(r.intent.user_id, pending, w.kept)
        return out  # type: ignore[return-value]

    async def _release(self, user_id: str, reservations: Sequence[Reservation]) -> None:
        if not reservations:
            return
        try:
            await self.history.release(user_id, reservations)
        except HistoryUnavailable as exc:  # over-counting is the safe side of a cap
            log.warning("could not release %d reservations of %s: %s", len(reservations), user_id, exc)

    async def decide_pending(self, limit: int = 100, lease: dt.timedelta = dt.timedelta(seconds=30)) -> int:
        """Decide intents accepted while Redis was down; returns how many were decided.

        Each is claimed first (`UndecidedStore.claim`), so of several workers doing this at
        once exactly one decides a given intent; a decision recorded after the claim was lost
        changes nothing and gives its reservations back.
        """
        now = self.clock()
        claimed = await self.undecided.claim(self.owner, now, lease, limit)
        if not claimed:
            return 0
        requests = [_late_request(row) for row in claimed]
        decided = 0
        staged_all = await self._decide(requests, self.policy(), now)
        for n, (request, staged) in enumerate(zip(requests, staged_all, strict=True)):
            if isinstance(staged, BaseException):
                # A rule removed since acceptance, ...: record why and move on.
                log.warning("cannot decide %s: %s", request.notification_id, staged)
                staged = _unroutable(request, now, str(staged))
            if staged.undecided:  # Redis is still away: let the next pass (anyone's) take them
                await self.undecided.release(self.owner, [r.notification_id or "" for r in requests[n:]])
                break
            recorded = await self.undecided.record(staged.pending, self.owner, now)
            if recorded is None:
                await self._release(staged.user_id, staged.reservations)
                continue
            self.history.confirm(staged.user_id, staged.reservations)
            decided += 1
            self.dispatcher.dispatch(recorded)
        return decided


def _late_request(row: Undecided) -> IntakeRequest:
    """An undecided intent as it was accepted. Its expiry runs from acceptance: an intent
    without send_at was due when it was accepted, so a stale OTP is dropped, not sent late."""
    return IntakeRequest(
        Intent(
            event=row.event,
            user_id=row.user_id,
            data=row.data,
            priority=row.priority,  # type: ignore[arg-type]
            channels=row.channels,
            idempotency_key=row.idempotency_key,
            send_at=row.send_at or row.created_at,
            locale=row.locale,
        ),
        row.producer,
        notification_id=row.id,
    )


def _reservation(
    delivery: Delivery,
    delivery_id: str,
    intent: Intent,
    decision: Decision,
    plan: Plan,
    user: UserState,
    now: dt.datetime,
    notification_id: str,
    identity: str,
) -> Reservation:
    caps: list[Cap] = []
    if "caps" not in plan.bypass:
        caps = list(plan.caps.get(delivery.channel, ()))
        own = preference_cap(user.preferences, intent.event, delivery.channel)
        if own is not None:
            caps.append(own)
    return Reservation(
        delivery_id=delivery_id,
        notification_id=notification_id,
        event=intent.event,
        channel=delivery.channel,
        category=decision.category,
        priority=intent.priority,
        fingerprint=delivery.fingerprint,
        # A batched item counts from its arrival: the engine finds its batch by the window's
        # close, which travels with it (a full batch's last item goes now, yet still belongs
        # to the window whose count it completed).
        at=now if delivery.batch is not None else delivery.send_at or now,
        dedup=plan.rule.dedup,
        caps=caps,
        batched=delivery.batch is not None,
        batch_closes_at=delivery.batch.closes_at if delivery.batch is not None else None,
        identity=identity,
    )


def _rows(
    intent: Intent,
    decision: Decision,
    notification_id: str,
    producer: str,
    now: dt.datetime,
    policy: CompiledPolicy,
    ids: dict[str, str],
) -> Pending:
    tier = policy.tiers[decision.tier]
    rank = policy.tier_rank(decision.tier)
    chain = {channel: i for i, channel in enumerate(decision.fallback)}
    rows: list[dict[str, Any]] = []
    specs: list[JobSpec] = []
    for group, status_of in ((decision.deliveries, None), (decision.standby, "standby")):
        for delivery in group:
            delivery_id = ids[delivery.channel]
            status = status_of or ("scheduled" if delivery.send_at is not None else "pending")
            rows.append(
                {
                    "id": delivery_id,
                    "notification_id": notification_id,
                    "user_id": intent.user_id,
                    "event": intent.event,
                    "channel": delivery.channel,
                    "status": status,
                    "reason": None,
                    "detail": None,
                    "rule": delivery.rule,
                    "tier": delivery.tier,
                    "queue": delivery.queue,
                    "template": delivery.template,
                    "providers": delivery.providers,
                    "chain_position": chain.get(delivery.channel),
                    "recipients": delivery.recipients,
                    "estimated_cost": delivery.estimated_cost,
                    "fingerprint": delivery.fingerprint,
                    "batch_key": delivery.batch.key if delivery.batch else None,
                    "batch_max": delivery.batch.max_size if delivery.batch else None,
                    "batch_closes_at": delivery.batch.closes_at if delivery.batch else None,
                    "grouped_into": None,
                    "send_at": delivery.send_at,
                    "expires_at": delivery.expires_at,
                    "attempts": 0,
                    "next_attempt_at": None,
                    "lease_owner": None,
                    "lease_until": None,
                    "provider": None,
                    "provider_message_id": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if status_of is None:
                specs.append(
                    JobSpec(delivery_id, delivery.queue, delivery.send_at or now, tier.chunk_size, rank)
                )
    for suppression in decision.suppressed:
        rows.append(_suppressed_row(suppression, intent, notification_id, now))
    return Pending(
        notification=_notification(intent, notification_id, producer, now, "decided", decision),
        deliveries=rows,
        job_specs=specs,
        idempotency=(producer, intent.idempotency_key) if intent.idempotency_key else None,
    )


def _suppressed_row(
    suppression: Suppression, intent: Intent, notification_id: str, now: dt.datetime
) -> dict[str, Any]:
    return {
        "id": new_id("d"),
        "notification_id": notification_id,
        "user_id": intent.user_id,
        "event": intent.event,
        "channel": suppression.channel,
        "status": "suppressed",
        "reason": suppression.reason,
        "detail": suppression.detail
        + (
            f"; folded into the next {suppression.digest}"
            if suppression.digest and "folded" not in suppression.detail
            else ""
        ),
        "rule": suppression.rule,
        "tier": None,
        "queue": None,
        "template": None,
        "providers": None,
        "chain_position": None,
        "recipients": 0,
        "estimated_cost": 0.0,
        "fingerprint": None,
        # A capped message the policy folds into a digest waits under the digest's key,
        # where the user's next digest of that channel picks it up (`DeliveryStore.claim_in`).
        "batch_key": fold_key(intent.user_id, suppression.digest) if suppression.digest else None,
        "batch_max": None,
        "batch_closes_at": None,
        "grouped_into": None,
        "send_at": None,
        "expires_at": None,
        "attempts": 0,
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_until": None,
        "provider": None,
        "provider_message_id": None,
        "created_at": now,
        "updated_at": now,
    }


def _notification(
    intent: Intent,
    notification_id: str,
    producer: str,
    now: dt.datetime,
    status: str,
    decision: Decision | None,
) -> dict[str, Any]:
    return {
        "id": notification_id,
        "event": intent.event,
        "user_id": intent.user_id,
        "priority": intent.priority,
        "data": intent.data,
        "channels": intent.channels,
        "locale": intent.locale,
        "send_at": intent.send_at,
        "idempotency_key": intent.idempotency_key,
        "producer": producer,
        "status": status,
        "category": decision.category if decision else None,
        "tier": decision.tier if decision else None,
        "rule": decision.rule if decision else None,
        "policy_version": decision.policy_version if decision else None,
        "fallback": decision.fallback if decision else None,
        "created_at": now,
        "decided_at": now if decision else None,
        "decide_owner": None,
        "decide_until": None,
    }


def _undecided(request: IntakeRequest, now: dt.datetime) -> _Staged:
    """An intent stored without a decision (Redis is away): decided later by `decide_pending()`."""
    intent, producer = request.intent, request.producer
    pending = Pending(
        notification=_notification(intent, request.notification_id or "", producer, now, "undecided", None),
        deliveries=[],
        job_specs=[],
        idempotency=(producer, intent.idempotency_key) if intent.idempotency_key else None,
    )
    return _Staged(intent.user_id, pending, [])


def _unroutable(request: IntakeRequest, now: dt.datetime, why: str) -> _Staged:
    """An intent that can no longer be decided (its rule was removed meanwhile): say so."""
    intent, notification_id = request.intent, request.notification_id or ""
    note = _notification(intent, notification_id, request.producer, now, "decided", None)
    why_row = _suppressed_row(
        Suppression(channel="*", reason="policy", detail=why, rule="none"), intent, notification_id, now
    )
    pending = Pending(notification=note, deliveries=[why_row], job_specs=[], idempotency=None)
    return _Staged(intent.user_id, pending, [])
