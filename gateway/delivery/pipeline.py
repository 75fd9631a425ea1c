"""What a worker does with one queue job: claim its deliveries, send them, record outcomes.

For each claimed delivery: drop it as `expired` when its tier's expiry has passed (an OTP
is never sent late); resolve its addresses from the recipient's *current* state (a device
unregistered since the decision is skipped); render it; try the providers of its chain in
order (a retryable failure moves to the next provider; push fans out to every device);
then record the outcome with its follow-up in one transaction: a retry job on the tier's
schedule, a dead letter when the retries are spent, the next channel of the fallback chain
when this one failed for good. The job's outbox row is deleted last: a worker that dies
before that leaves work the relay will hand out again, and the claims make it harmless.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from gateway.delivery.outcome import NO_PROVIDER, NOTHING_TRIED, Sent, given_back, outcome_of
from gateway.failpoints import failpoint
from gateway.metrics import PROVIDER_CONFIGURATION_FAILURES, record_outcome
from gateway.model import UserState
from gateway.policy.compiled import CompiledPolicy, RetryPolicy
from gateway.providers.base import Adapter, Address, Delivered, Message, Permanent, Retryable, SendResult
from gateway.providers.guard import ADMITTED, Admission, ProviderGuard
from gateway.providers.registry import ProviderRegistry
from gateway.providers.spec import ProviderSpec
from gateway.queue.dispatch import Dispatcher
from gateway.redact import redact
from gateway.store.claims import Claimed
from gateway.store.deliveries import DeliveryStore
from gateway.store.group_commit import GroupCommit
from gateway.store.outcomes import Applied, Outcome, Try
from gateway.store.recipients import SqlRecipients
from gateway.templating.catalog import RenderError

log = logging.getLogger("gateway.delivery")

# How an address a provider refused is marked; `opted_out` (the recipient texted STOP) is
# undone when they text START (`gateway/tracking/inbound_sms.py`).
_CONTACT_STATUS = {"hard_bounce": "bounced", "bounced": "bounced", "unsubscribed": "opted_out"}
_NO_RETRY = RetryPolicy(schedule=(dt.timedelta(seconds=30),), max_attempts=1, jitter=0.0, max_delay=None)


@dataclass(frozen=True, slots=True)
class Ready:
    """A delivery that passed preflight: its rendered message and where it goes now."""

    message: Message
    addresses: tuple[Address, ...]


def _refused(claimed: Claimed, error: str, reason: str) -> Outcome:
    """Failed before any provider was called; the fallback chain moves on."""
    return Outcome(
        claimed, "failed", tries=[Try(None, "permanent", error)], reason=reason, error=error, fall_back=True
    )


def _expired(claimed: Claimed, notification: Any, now: dt.datetime, idempotent: bool) -> Outcome | None:
    """An OTP is never sent late: past its tier's expiry the delivery is dropped."""
    if claimed.expires_at is None or now < claimed.expires_at:
        return None
    error = f"not sent by {claimed.expires_at.isoformat()}: expired rather than sent late"
    return Outcome(claimed, "expired", tries=[Try(None, "expired", error)], reason="expired", error=error)


def _unsafe_repeat(claimed: Claimed, notification: Any, now: dt.datetime, idempotent: bool) -> Outcome | None:
    """A worker died mid-send: only providers that drop a repeat may be called again."""
    if not claimed.reclaimed or idempotent:
        return None
    error = (
        "a worker stopped while sending this; its providers cannot drop a repeat, so it is not "
        "sent again (it may have been delivered)"
    )
    return Outcome(
        claimed, "unknown", tries=[Try(None, "unknown", error)], reason="outcome_unknown", error=error
    )


def _missing(claimed: Claimed, notification: Any, now: dt.datetime, idempotent: bool) -> Outcome | None:
    if notification is not None:
        return None
    return Outcome(
        claimed,
        "failed",
        tries=[Try(None, "permanent", "notification missing")],
        reason="missing",
        error="the notification row is missing",
    )


# Preflight's checks that need no I/O, in the order they are asked; addresses and rendering
# come after them, in `DeliveryPipeline.preflight`.
PREFLIGHT: tuple[Callable[[Claimed, Any, dt.datetime, bool], Outcome | None], ...] = (
    _expired,
    _unsafe_repeat,
    _missing,
)


class Renderer(Protocol):
    def render(
        self,
        claimed: Claimed,
        notification: Any,
        user: UserState | None,
        batch: Sequence[Mapping[str, Any]] | None = None,
    ) -> Message: ...


class DeliveryPipeline:
    def __init__(
        self,
        *,
        store: DeliveryStore,
        recipients: SqlRecipients,
        registry: ProviderRegistry,
        policy: Callable[[], CompiledPolicy],
        outcomes: GroupCommit[Outcome, Applied],
        dispatcher: Dispatcher,
        renderer: Renderer,
        clock: Callable[[], dt.datetime],
        owner: str,
        lease: dt.timedelta,
        concurrency: int = 32,
        send_timeout: float = 10.0,
        guard: ProviderGuard | None = None,
        rate_wait: float = 1.0,
    ) -> None:
        self.store = store
        self.recipients = recipients
        self.registry = registry
        self.policy = policy
        self.outcomes = outcomes
        self.dispatcher = dispatcher
        self.renderer = renderer
        self.clock = clock
        self.owner = owner
        self.lease = lease
        self.send_timeout = send_timeout
        self.concurrency = concurrency
        self.guard = guard
        self.rate_wait = rate_wait
        self._limits: dict[str, asyncio.Semaphore] = {}
        # Claimed deliveries some provider was called for: a cancelled job gives back only
        # the others (`_give_back`); these may have been sent, so the lease decides.
        self._calling: set[str] = set()
        self._giving_back: set[asyncio.Task[None]] = set()
        self.claims: GroupCommit[str, Claimed | None] = GroupCommit(
            store.database, self._claim_in, clock=clock, name="claims"
        )
        # Concurrent jobs' outbox rows are deleted together, one transaction for many jobs.
        self.finished: GroupCommit[str, None] = GroupCommit(
            store.database, store.finish_jobs, clock=clock, name="finished"
        )

    async def start(self) -> None:
        await self.claims.start()
        await self.finished.start()

    async def stop(self, *, grace: float = 5.0) -> None:
        """After the jobs: the claims still committing land (and are given back, their jobs
        being gone), then the finished jobs' deletes."""
        await self.claims.stop(grace=grace)
        await asyncio.sleep(0)  # the landed claims' callbacks start their give-backs
        if self._giving_back:
            await asyncio.wait(self._giving_back, timeout=grace)
        await self.finished.stop(grace=grace)

    async def run(self, job_id: str, delivery_ids: Sequence[str], *, lane: str = "") -> int:
        """Do one job; returns how many deliveries this worker sent (or settled).

        `lane` (the job's queue) has its own limit of sends in flight, so a bulk chunk's
        slow sends never hold a critical delivery back inside one worker process.
        """
        limit = self._limits.get(lane)
        if limit is None:
            limit = self._limits[lane] = asyncio.Semaphore(self.concurrency)
        todo = await self.store.claimable(delivery_ids, self.clock())
        done = 0
        if todo.early:
            self.dispatcher.dispatch(await self.store.requeue(todo.early, self.clock()))
        notes, users = todo.notifications, todo.users
        if len(todo.now) == 1:  # a critical job's one delivery: no task of its own
            [(d, n, u)] = todo.now
            done = int(await self._one(d, notes.get(n), users.get(u), limit))
        elif todo.now:
            handled = await asyncio.gather(
                *(self._one(d, notes.get(n), users.get(u), limit) for d, n, u in todo.now)
            )
            done = sum(handled)
        await self.finished.submit(job_id)
        failpoint("job.finished")
        return done

    async def _one(
        self, delivery_id: str, notification: Any, user: UserState | None, limit: asyncio.Semaphore
    ) -> bool:
        # Claimed only when its turn to be sent comes, so its lease covers its own send and
        # not the wait behind the rest of its job: a slow chunk never looks like a dead worker.
        async with limit:
            claimed = await self._claim(delivery_id)
            if claimed is None:
                return False  # another worker has it, or has done it
            failpoint("delivery.claimed")
            try:
                outcome = await self.attempt(claimed, notification, user)
            except asyncio.CancelledError:
                if claimed.id not in self._calling:
                    await asyncio.shield(self._give_back(claimed))  # the job ends once it is stored
                raise
            finally:
                self._calling.discard(claimed.id)
        failpoint("delivery.sent")
        applied = await self.outcomes.submit(outcome)
        failpoint("delivery.recorded")
        record_outcome(outcome, getattr(notification, "created_at", None), self.clock())
        self.dispatcher.dispatch(applied.jobs)
        return True

    async def _claim(self, delivery_id: str) -> Claimed | None:
        """Claim one delivery in the next group commit. A job cancelled while its claim is
        committing does not take the claim back: it lands all the same, and is given back."""
        landing = self.claims.put(delivery_id)
        try:
            return await asyncio.shield(landing)
        except asyncio.CancelledError:
            landing.add_done_callback(self._claimed_late)
            raise

    def _claimed_late(self, landing: asyncio.Future[Claimed | None]) -> None:
        if landing.cancelled() or landing.exception() is not None:
            return
        claimed = landing.result()
        if claimed is not None:
            self._give_back(claimed)

    def _give_back(self, claimed: Claimed) -> asyncio.Task[None]:
        """Return a claim no provider was called for (`delivery.outcome.given_back`), in a
        task of its own that a second cancellation does not stop; `stop` waits for it."""
        task = asyncio.ensure_future(self._store_given_back(claimed))
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)
        return task

    async def _store_given_back(self, claimed: Claimed) -> None:
        log.warning("delivery %s given back: its job was cancelled before it was sent", claimed.id)
        try:
            applied = await self.outcomes.submit(given_back(claimed, self.clock()))
        except Exception as exc:  # the database is away: the lease brings it back later
            log.warning("could not give delivery %s back: %s", claimed.id, exc)
            return
        self.dispatcher.dispatch(applied.jobs)

    async def _claim_in(self, connection: Any, ids: list[str], now: dt.datetime) -> list[Claimed | None]:
        return await self.store.claim_in(
            connection, ids, self.owner, now + self.lease, now, digests=self.policy().digest_events
        )

    async def attempt(self, claimed: Claimed, notification: Any, user: UserState | None) -> Outcome:
        """Preflight, send, then judge: `outcome_of` is pure, the rest is this shell's I/O."""
        ready = await self.preflight(claimed, notification, user)
        if isinstance(ready, Outcome):
            return ready
        reached, ready = await self._not_reached(claimed, ready)
        tries, sent = await self.send(claimed, ready)
        for each in sent:
            if isinstance(each.result, Permanent) and each.result.address_invalid and user is not None:
                await self._invalidate(claimed, each.address, each.result)
        return outcome_of(claimed, tries, [*reached, *sent], self._retry_policy(claimed), self.clock())

    async def _not_reached(self, claimed: Claimed, ready: Ready) -> tuple[list[Sent], Ready]:
        """On a retry of a push, the devices an earlier attempt reached (as delivered, not
        called again) and the message for the others: one device's failure never sends
        the message twice to another."""
        if claimed.attempts <= 1 or not any(a.kind == "device" for a in ready.addresses):
            return [], ready
        earlier = await self.store.reached(claimed.id)
        reached = [
            Sent(a, earlier[a.tag][0] or "", Delivered(earlier[a.tag][1]))
            for a in ready.addresses
            if a.tag in earlier
        ]
        return reached, replace(ready, addresses=tuple(a for a in ready.addresses if a.tag not in earlier))

    async def preflight(self, claimed: Claimed, notification: Any, user: UserState | None) -> Outcome | Ready:
        """What must hold before any provider is called, in order: the first check that
        refuses ends the attempt with its outcome; otherwise the rendered message and where
        it goes."""
        now = self.clock()
        idempotent = not claimed.reclaimed or self.registry.idempotent(claimed.providers)
        for check in PREFLIGHT:
            refused = check(claimed, notification, now, idempotent)
            if refused is not None:
                return refused
        addresses = addresses_for(claimed.channel, self.policy(), user, claimed.user_id)
        if not addresses:
            error = f"the user has no usable {claimed.channel} address any more"
            return _refused(claimed, error, "no_address")
        try:
            batch = await self._batch(claimed, notification) if claimed.members else None
            message = self.renderer.render(claimed, notification, user, batch)
        except RenderError as exc:
            return _refused(claimed, str(exc), "template_error")
        return Ready(message, tuple(addresses))

    async def send(self, claimed: Claimed, ready: Ready) -> tuple[list[Try], list[Sent]]:
        """Every address through its provider chain at once: push fans out to every device,
        and sent one after another, a user with many devices and a slow provider could
        outlast the delivery's lease. The tries come back in address order."""
        if len(ready.addresses) == 1:  # most channels: no task of its own for one address
            tries: list[Try] = []
            return tries, [await self._through_chain(claimed, ready.message, ready.addresses[0], tries)]
        per_address: list[list[Try]] = [[] for _ in ready.addresses]
        sent = await asyncio.gather(
            *(
                self._through_chain(claimed, ready.message, address, own)
                for address, own in zip(ready.addresses, per_address, strict=True)
            )
        )
        return [t for own in per_address for t in own], list(sent)

    async def _batch(self, claimed: Claimed, notification: Any) -> list[Mapping[str, Any]]:
        """The items a grouped message carries: its batch in arrival order, then what was folded in."""
        notes = await self.store.notifications([m.notification_id for m in claimed.members])
        batched = [notification] + [notes[m.notification_id] for m in claimed.members if not m.folded]
        batched.sort(key=lambda n: (n.created_at, n.id))
        folded = [notes[m.notification_id] for m in claimed.members if m.folded]
        return [n.data or {} for n in batched + folded]

    async def _through_chain(
        self, claimed: Claimed, message: Message, address: Address, tries: list[Try]
    ) -> Sent:
        """Try each provider of the chain in order until one delivers or refuses for good.

        A provider whose breaker is open, or whose rate limit would make this send wait
        longer than `rate_wait`, is skipped like one that failed; a short wait for a token
        is cheaper than failing over or retrying later. A failure moves on only when its
        class is the provider's health or configuration, and not when the provider may have
        taken the message (`settles_unknown`).
        """
        result: SendResult = Retryable("no provider could be tried", code=NO_PROVIDER)
        waits: list[float] = []
        unfit = 0  # providers that do not serve this device's platform
        for name in claimed.providers:
            adapter = self.registry.get(name)
            if adapter is None:
                tries.append(Try(name, "skipped", "provider not configured"))
                continue
            spec = self.registry.specs.get(name)
            misfit = unfit_for(adapter, spec, address)
            if misfit is not None:
                tries.append(Try(name, "skipped", misfit))
                unfit += 1
                continue
            admission = await self._admit(name)
            if not admission.allowed:
                waits.append(admission.wait)
                tries.append(Try(name, "skipped", f"{admission.reason}: free again in {admission.wait:.2f}s"))
                continue
            result, attempt = await self._call(name, adapter, claimed, message, address)
            await self._judge(name, result, admission)
            if isinstance(result, Retryable) and self._settles_unknown(claimed, name, result):
                tries.append(replace(attempt, outcome="unknown"))
                return Sent(address, name, result, settles_unknown=True)
            tries.append(attempt)
            if not isinstance(result, Retryable):
                return Sent(address, name, result)
        if unfit and unfit == len(claimed.providers):
            return Sent(
                address,
                claimed.providers[-1],
                Permanent(
                    NO_PROVIDER,
                    f"no provider of the chain delivers to {address.platform} devices "
                    f"with {address.token_provider or 'these'} tokens",
                ),
            )
        if waits and len(waits) == len(claimed.providers):
            # Nothing was tried: every provider is open or saturated. Come back when one frees up.
            return Sent(
                address,
                claimed.providers[-1],
                Retryable(
                    "every provider is unavailable (paused, circuit open or rate limited)",
                    retry_after=min(waits),
                    code=NOTHING_TRIED,
                ),
            )
        # Had the last answer been one the provider may have taken, the loop would have ended.
        return Sent(address, claimed.providers[-1] if claimed.providers else "", result)

    async def _call(
        self, name: str, adapter: Adapter, claimed: Claimed, message: Message, address: Address
    ) -> tuple[SendResult, Try]:
        """One provider call, never raising: its result and the try that records it."""
        spec = self.registry.specs.get(name)
        called_at = self.clock()
        started = time.perf_counter()
        # Each adapter enforces its provider's own timeout; this is the backstop for one that
        # does not, generous enough (twice, plus a second) for a token fetch before the send,
        # and within the lease, so a slow provider never makes the send look orphaned.
        limit = max(self.send_timeout, 2 * spec.timeout + 1) if spec is not None else self.send_timeout
        limit = min(limit, 0.9 * self.lease.total_seconds())
        result: SendResult
        self._calling.add(claimed.id)  # from here on, the provider may get the message
        try:
            async with asyncio.timeout(limit):  # no task of its own per send, as wait_for makes
                result = await adapter.send(message, address, idempotency_key=claimed.id)
        except TimeoutError:
            # The adapter was cut off mid-call: the provider may have the message.
            result = Retryable(f"{name} did not answer within {limit:g}s", code="timeout", ambiguous=True)
        except Exception as exc:  # an adapter bug must not lose the delivery
            log.exception("provider %s failed unexpectedly", name)
            result = Retryable(f"{name} raised {type(exc).__name__}", code="adapter_error")
        elapsed = (time.perf_counter() - started) * 1000
        reference = result.provider_message_id if not isinstance(result, Permanent) else None
        if not isinstance(result, Delivered):
            return result, Try(
                name, result.outcome, result.error, reference, elapsed, called_at, recipient=address.tag
            )
        # What it cost: the provider's own price when it said, else providers.yaml's unit cost
        # per message (per segment for SMS).
        reported = result.price is not None
        configured = (spec.cost if spec is not None else 0.0) * (result.segments or 1)
        return result, Try(
            name,
            result.outcome,
            None,
            reference,
            elapsed,
            called_at,
            segments=result.segments,
            cost=result.price if result.price is not None else configured,
            cost_source="reported" if reported else "configured",
            recipient=address.tag,
        )

    async def _judge(self, name: str, result: SendResult, admission: Admission) -> None:
        """Tell the breaker how the provider did: health and configuration failures count
        against it (configuration opens it at once); the address's or message's do not."""
        if not isinstance(result, Retryable):
            if self.guard is not None:
                await self.guard.record(name, False, trial=admission.trial)
            return
        if self.guard is not None and result.retry_after is not None and result.failure == "health":
            # The provider said when it takes calls again: every worker waits, not just us.
            await self.guard.pause(name, result.retry_after)
        configuration = result.failure == "configuration"
        if configuration:
            PROVIDER_CONFIGURATION_FAILURES.labels(name, result.code).inc()
            log.error("provider %s refused our configuration (%s): %s", name, result.code, result.error)
        if self.guard is not None:
            await self.guard.record(name, True, trial=admission.trial, at_once=configuration)

    def _settles_unknown(self, claimed: Claimed, name: str, result: Retryable) -> bool:
        """Whether an ambiguous failure ends the delivery as `unknown` rather than moving on:
        the provider may have taken the message and cannot drop a repeat, and the tier did
        not opt into at-least-once (`ambiguous: at_least_once`)."""
        if not result.ambiguous:
            return False
        adapter = self.registry.get(name)
        if adapter is not None and adapter.idempotent:
            return False
        tier = self.policy().tiers.get(claimed.tier or "")
        return not (tier is not None and tier.at_least_once)

    async def _admit(self, name: str) -> Admission:
        if self.guard is None:
            return ADMITTED
        waited = 0.0
        while True:
            admission = await self.guard.admit(name)
            if admission.allowed or admission.reason == "circuit_open":
                return admission
            if waited + admission.wait > self.rate_wait:
                return admission
            await asyncio.sleep(admission.wait)
            waited += admission.wait

    async def _invalidate(self, claimed: Claimed, address: Address, result: Permanent) -> None:
        now = self.clock()
        log.info(
            "%s address %s is unusable (%s): marking it",
            claimed.channel,
            redact(address.kind, address.value),
            result.code,
        )
        if address.kind == "device":
            await self.recipients.deactivate_device(claimed.user_id, address.value, result.code, now)
        elif address.kind in ("email", "phone", "webhook"):
            status = _CONTACT_STATUS.get(result.code, "invalid")
            await self.recipients.mark_contact(
                claimed.user_id, address.kind, address.value, status, result.code, now
            )

    def _retry_policy(self, claimed: Claimed) -> RetryPolicy:
        tier = self.policy().tiers.get(claimed.tier or "")
        return tier.retry if tier is not None else _NO_RETRY


def unfit_for(adapter: Any, spec: ProviderSpec | None, address: Address) -> str | None:
    """Why this provider cannot serve this device, or None: a platform it does not deliver to,
    or a token another provider issued. An adapter naming `device_tokens` (fcm, apns) takes
    only that provider's tokens; one that does not (the dev outbox) takes any."""
    if address.kind != "device":
        return None
    if spec is not None and spec.platforms and address.platform not in spec.platforms:
        return f"does not deliver to {address.platform} devices"
    kind = getattr(adapter, "device_tokens", None)
    if kind is not None and address.token_provider not in (None, kind):
        return f"does not take {address.token_provider} device tokens"
    return None


def addresses_for(
    channel: str, policy: CompiledPolicy, user: UserState | None, user_id: str
) -> list[Address]:
    """Where a channel's message goes for this user now: every active device, the address..."""
    definition = policy.channels.get(channel)
    kind = definition.address if definition is not None else channel
    if kind == "inbox":
        return [Address("user", user_id)]
    if user is None:
        return []
    contacts = user.contacts
    if kind == "devices":
        return [Address("device", d.token, d.platform, d.provider) for d in contacts.devices if d.active]
    value = {"email": contacts.email, "phone": contacts.phone, "webhook": contacts.webhook}.get(kind)
    return [Address(kind, value)] if value else []  # type: ignore[arg-type]
