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
from dataclasses import dataclass

from gateway.batching import MicroBatcher, isolating, not_an_outage
from gateway.decisions import decide_or_reject, validate_intent
from gateway.errors import ClientError, HistoryUnavailable
from gateway.failpoints import failpoint
from gateway.history import RedisHistory, Reservation, UserHistory, identity_of
from gateway.ids import new_id
from gateway.metrics import INTENTS_ACCEPTED, POLICY_EVALUATION
from gateway.model import Intent
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.tracing import NO_TRACE
from gateway.queue.dispatch import Dispatcher
from gateway.quota import Quota, QuotaSpec
from gateway.recipients import as_recipient
from gateway.reservations import Reserving
from gateway.store import records
from gateway.store.database import Database
from gateway.store.intake import IntakeWriter, Pending
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
        # Urgent intents are decided in batches of their own, alongside the ordinary ones rather
        # than after the batch in progress (same-user order holds within each lane; across them,
        # the reservation script's atomic checks decide, and urgent never counts toward caps).
        self.urgent: MicroBatcher[IntakeRequest, IntakeResult | _Staged] = MicroBatcher(
            self._stage_batch, name="intake-urgent", max_batch=max_batch
        )

    async def start(self) -> None:
        await self.batcher.start()
        await self.urgent.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.urgent.stop()

    async def accept(self, intent: Intent, producer: str, quota: QuotaSpec | None = None) -> IntakeResult:
        validate_intent(intent, self.policy())
        urgent = intent.priority == "urgent"  # in the urgent lane, of batches and of commits
        lane = self.urgent if urgent else self.batcher
        staged = await lane.submit(IntakeRequest(intent, producer, quota))
        if isinstance(staged, IntakeResult):
            return staged
        result = await self._store(staged, urgent=urgent)
        if not result.replay:
            INTENTS_ACCEPTED.labels(intent.priority).inc()
        return result

    async def accept_many(self, intents: Sequence[Intent], producer: str) -> list[IntakeResult]:
        """Many intents (a bulk request, chunk by chunk), stored through the shared group commits.

        If deciding any of them fails, none is stored. A store failure part-way can leave the
        earlier commits stored: a bulk request with an `idempotency_key` is therefore safe to
        retry, as the retry replays those (`model.recipient_key`) and stores the rest.
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

    async def probe(self, intent: Intent) -> None:
        """Check a bulk request before storing it, on its first recipient: an unknown channel,
        an event no rule routes, or data its templates cannot render is a 422 now, not ten
        thousand refusals later. Nothing is reserved or stored."""
        policy = self.policy()
        validate_intent(intent, policy)
        user = as_recipient(
            intent.user_id, (await self.recipients.get_users([intent.user_id])).get(intent.user_id)
        )
        decision = decide_or_reject(intent, user, self.clock(), [], policy, tracer=NO_TRACE)
        render_messages(decision, intent, user, policy)

    async def expand(
        self, intents: Sequence[Intent], producer: str, bulk_id: str
    ) -> list[IntakeResult | ClientError]:
        """A chunk of a bulk request's recipients (`gateway.fanout`), each stored as its own
        notification naming the request. Unlike `accept_many`, one recipient's refusal (a
        template its locale cannot render) is that recipient's answer, not the chunk's: the
        request was accepted long ago. Any other failure stores nothing and raises, for the
        chunk to be expanded again."""
        outcomes = await self.batcher.submit_many([IntakeRequest(i, producer) for i in intents])
        failed = next(
            (o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, ClientError)), None
        )
        if failed is not None:
            for outcome in outcomes:
                if isinstance(outcome, _Staged):
                    await self._release(outcome.user_id, outcome.reservations)
            raise failed
        for outcome in outcomes:
            if isinstance(outcome, _Staged):
                outcome.pending.notification["bulk_id"] = bulk_id
        stored = iter(await asyncio.gather(*(self._store(o) for o in outcomes if isinstance(o, _Staged))))
        results: list[IntakeResult | ClientError] = []
        for intent, outcome in zip(intents, outcomes, strict=True):
            if isinstance(outcome, ClientError):
                results.append(outcome)
                continue
            result = outcome if isinstance(outcome, IntakeResult) else next(stored)
            if not result.replay:
                INTENTS_ACCEPTED.labels(intent.priority).inc()
            results.append(result)
        return results

    async def _store(self, staged: _Staged, *, urgent: bool = False) -> IntakeResult:
        try:
            result = await self.writer.submit(staged.pending, urgent=urgent)
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
            found = await self._known_keys([pair for _, pair in keyed], now)
            for (i, _), known in zip(keyed, found, strict=True):
                if isinstance(known, BaseException):
                    out[i] = known
                elif known is not None:
                    out[i] = IntakeResult(known, replay=True, user_id=requests[i].intent.user_id)
        live = [i for i in range(len(requests)) if out[i] is None]
        if live:
            for i, staged in zip(
                live, await self._decide([requests[i] for i in live], policy, now), strict=True
            ):
                out[i] = staged
        return out  # type: ignore[return-value]

    async def _known_keys(
        self, pairs: list[tuple[str, str]], now: dt.datetime
    ) -> list[str | BaseException | None]:
        """Per (producer, key), the notification it already names; a key the store cannot even
        look up (a NUL on PostgreSQL) fails its own intent, not the batch's."""

        async def lookup(part: list[tuple[str, str]]) -> list[str | BaseException | None]:
            first = await self.writer.lookup_keys(part, now)
            return [first.get(pair) for pair in part]

        return await isolating(lookup, pairs, not_an_outage)

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
        reserving: list[tuple[int, IntakeRequest, Reserving]] = []
        for n, r in enumerate(requests, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a batch decides for ~100 µs an intent: let urgent work in
            user_id = r.intent.user_id
            user = as_recipient(user_id, users.get(user_id))
            identity = identity_of(r.producer, r.intent.idempotency_key)
            seen = histories[user_id].for_intent(r.notification_id or "", identity)
            try:
                with POLICY_EVALUATION.time():
                    decision = decide_or_reject(r.intent, user, now, seen, policy, tracer=NO_TRACE)
                render_messages(decision, r.intent, user, policy)  # 422 now, not a failed send later
                rule = policy.rule(decision.rule)
                plan = policy.plan(rule, r.intent.priority) if rule is not None else None
            except Exception as exc:  # one intent's error is that intent's answer
                out.append(exc)
                continue
            # Each channel is delivered at most once per notification: ids by channel, fixed now,
            # name the reservations and then the rows.
            ids = {d.channel: new_id("d") for d in (*decision.deliveries, *decision.standby)}
            work = Reserving(r.intent, r.notification_id or "", identity, user, now, decision, plan, ids)
            # Later intents of this batch for the same user decide as if this one were sent.
            histories[user_id] = histories[user_id].plus([item for _, item in work.asking])
            reserving.append((len(out), r, work))
            out.append(None)  # staged once reserved
        try:
            while asking := [w for _, _, w in reserving if w.asking]:
                verdicts = await self.history.reserve_many(
                    [(w.intent.user_id, [item for _, item in w.asking]) for w in asking], now
                )
                for w, answer in zip(asking, verdicts, strict=True):
                    w.settle(answer)
        except HistoryUnavailable as exc:
            log.warning(
                "Redis failed while reserving (%s): storing %d intents undecided", exc, len(reserving)
            )
            for index, r, _ in reserving:
                out[index] = _undecided(r, now)
            return out  # type: ignore[return-value]
        failpoint("intake.reserved")  # reserved in Redis, not yet stored: a crash leaves provisional entries
        for n, (index, r, w) in enumerate(reserving, 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            decision = w.final()
            pending = records.decided(
                r.intent, decision, r.notification_id or "", r.producer, now, policy, w.ids
            )
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
                staged = _Staged(
                    request.intent.user_id,
                    records.unroutable(
                        request.intent, request.notification_id or "", request.producer, now, str(staged)
                    ),
                    [],
                )
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


def _undecided(request: IntakeRequest, now: dt.datetime) -> _Staged:
    """An intent stored without a decision (Redis is away): decided later by `decide_pending()`."""
    intent = request.intent
    return _Staged(
        intent.user_id, records.undecided(intent, request.notification_id or "", request.producer, now), []
    )
