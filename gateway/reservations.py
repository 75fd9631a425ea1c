"""One intent's decision while its deliveries are reserved in the history, round by round.

The engine decided from a snapshot of the user's history; the reservation script re-checks
each delivery against the history as it is now (`gateway.history`). A delivery it refuses
(a concurrent intent for the same user got there first) becomes a suppression, worded as
the engine would have worded it; a refused head of a `first` fallback chain passes the turn
to the next standby channel, which is asked for in the next round. When nothing is left to
ask, `final()` is the decision to store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from gateway.history import Reservation, Verdict
from gateway.model import Decision, Delivery, Intent, Suppression, UserState
from gateway.policy.compiled import Cap, Plan
from gateway.policy.engine import preference_cap


@dataclass(slots=True)
class Reserving:
    intent: Intent
    notification_id: str
    identity: str  # the producer's idempotency key, hashed (`history.identity_of`)
    user: UserState
    now: dt.datetime
    decision: Decision
    plan: Plan | None  # None: nothing to reserve (no rule matched)
    ids: dict[str, str]  # the delivery id of each channel, fixed before the first round
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
        self.asking = [(d, self.reservation(d, self.plan)) for d in wanted]

    def settle(self, verdicts: Sequence[Verdict]) -> None:
        """Take this round's verdicts, one per delivery asked for."""
        asked, self.asking = self.asking, []
        promoted: list[Delivery] = []
        for (delivery, item), verdict in zip(asked, verdicts, strict=True):
            if verdict.kind == "ok":
                self.kept.append(item)
                continue
            self.delivered.remove(delivery)
            self.suppressed.append(self.refusal(delivery.channel, verdict))
            if self.standby and delivery.channel in self.decision.fallback:
                promoted.append(self.standby.pop(0))
        self.delivered.extend(promoted)
        self.ask(promoted)

    def refusal(self, channel: str, verdict: Verdict) -> Suppression:
        if verdict.kind == "duplicate":
            return Suppression(
                channel=channel,
                reason="duplicate",
                rule=self.decision.rule,
                detail=f"an identical message was committed concurrently, "
                f"as notification {verdict.notification_id}",
            )
        return Suppression(
            channel=channel,
            reason="frequency_capped",
            rule=verdict.cap,
            detail=f"cap {verdict.cap} was reached by a concurrent delivery",
            digest=self.overflow_digest(channel, verdict.cap),
        )

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

    def reservation(self, delivery: Delivery, plan: Plan) -> Reservation:
        """What the history must check and record for one delivery."""
        intent = self.intent
        caps: list[Cap] = []
        if "caps" not in plan.bypass:
            caps = list(plan.caps.get(delivery.channel, ()))
            own = preference_cap(self.user.preferences, intent.event, delivery.channel)
            if own is not None:
                caps.append(own)
        return Reservation(
            delivery_id=self.ids[delivery.channel],
            notification_id=self.notification_id,
            event=intent.event,
            channel=delivery.channel,
            category=self.decision.category,
            priority=intent.priority,
            fingerprint=delivery.fingerprint,
            # A batched item counts from its arrival: the engine finds its batch by the window's
            # close, which travels with it (a full batch's last item goes now, yet still belongs
            # to the window whose count it completed).
            at=self.now if delivery.batch is not None else delivery.send_at or self.now,
            dedup=plan.rule.dedup,
            caps=caps,
            batched=delivery.batch is not None,
            batch_closes_at=delivery.batch.closes_at if delivery.batch is not None else None,
            identity=self.identity,
        )
