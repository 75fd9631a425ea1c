"""The shell around `decide()`: validate an intent against the policy, gather the state it
needs, and call the pure engine. The dry-run endpoint, `notigate explain` and the intake
path all come through here, so they can never disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import msgspec

from gateway.errors import ClientError
from gateway.model import Decision, DryRunRequest, HistoryEntry, Intent, TraceStep, UserState
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.engine import NoMatchingRule, decide
from gateway.policy.tracing import Tracer
from gateway.recipients import HistorySource, UserDirectory, as_recipient

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def validate_intent(intent: Intent, policy: CompiledPolicy, prefix: str = "intent") -> None:
    """Reject what the policy cannot mean: channels it does not know."""
    for index, channel in enumerate(intent.channels or ()):
        if channel not in policy.channels:
            raise ClientError(
                f"unknown channel {channel!r}; the policy delivers {', '.join(sorted(policy.channels))}",
                field=f"{prefix}.channels[{index}]",
                code="unknown_channel",
            )


def decide_or_reject(
    intent: Intent,
    user: UserState,
    now: dt.datetime,
    history: Sequence[HistoryEntry],
    policy: CompiledPolicy,
    prefix: str = "intent",
    *,
    tracer: Tracer | None = None,
) -> Decision:
    try:
        return decide(intent, user, now, history, policy, tracer=tracer)
    except NoMatchingRule as exc:
        raise ClientError(
            f"no policy rule routes event {intent.event!r} at priority {intent.priority}; "
            "check the event name, or add a rule for it",
            field=f"{prefix}.event",
            code="no_matching_rule",
        ) from exc


async def dry_run(
    request: DryRunRequest,
    policy: CompiledPolicy,
    users: UserDirectory,
    history: HistorySource,
    clock: Clock = utcnow,
) -> Decision:
    """Decide without storing, sending or counting anything."""
    decision, _ = await decide_for(request, policy, users, history, clock)
    return decision


async def decide_for(
    request: DryRunRequest,
    policy: CompiledPolicy,
    users: UserDirectory,
    history: HistorySource,
    clock: Clock = utcnow,
) -> tuple[Decision, UserState]:
    """The dry run's decision and the user it was made for (given, stored, or unknown).

    A user the store does not know is decided for exactly as intake does: as a recipient
    with no contacts, preferences or zone (only channels needing no address, the in-app
    feed, can deliver). The trace's first step says so, so no one mistakes it for a user.
    """
    intent = request.intent
    validate_intent(intent, policy)
    user = request.user
    unknown = False
    if user is None:
        stored = await users.get_user(intent.user_id)
        user, unknown = as_recipient(intent.user_id, stored), stored is None
    elif user.user_id != intent.user_id:
        raise ClientError(
            f"user.user_id {user.user_id!r} differs from intent.user_id {intent.user_id!r}",
            field="user.user_id",
            code="user_mismatch",
        )
    now = request.at or clock()
    entries = request.history if request.history is not None else await history.recent(intent.user_id, now)
    decision = decide_or_reject(intent, user, now, list(entries), policy)
    if unknown:
        decision = msgspec.structs.replace(decision, trace=[UNKNOWN_USER, *decision.trace])
    return decision, user


UNKNOWN_USER = TraceStep(
    step="user",
    rule=None,
    file=None,
    line=None,
    expr=None,
    value="unknown",
    detail="no stored user with this id: decided as intake decides, for a recipient with no "
    "contacts, preferences or zone; store the user, or pass `user`, to see their decision",
)
