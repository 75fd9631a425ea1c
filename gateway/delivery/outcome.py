"""What a delivery's sends add up to: the one pure judgement of an attempt.

The pipeline's shell calls providers and marks refused addresses; this module only reads
their answers, so the rules below can be property-tested without a provider, a database or
a clock (`tests/delivery/test_outcome.py`):

- any address delivered: the delivery is `delivered` (push fans out; one device is enough
  for the channel to have reached the user, so it never falls back), except that while the
  tier allows more attempts, devices that failed for a reason worth retrying are retried
  (`retrying`, reason `devices_pending`): the retry goes to them alone;
- else any provider that may have taken the message and cannot drop a repeat: `unknown`,
  never sent again elsewhere (docs/providers.md, "At most once on ambiguity");
- else any retryable failure: `retrying` on the tier's schedule, raised to the providers'
  Retry-After, or `dead` when the attempts are spent; when no provider was called at all
  the delivery only waits, and the wait spends no attempt;
- else every address refused for good: `failed`, and the fallback chain moves on.

A claimed delivery whose job was cancelled before any provider was called (a job timeout,
a worker's stop) is `given_back`: open again at once, its attempt not spent.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.delivery.retry import next_attempt
from gateway.policy.compiled import RetryPolicy
from gateway.providers.base import Address, Delivered, Permanent, Retryable, SendResult
from gateway.store.claims import ON_TIME, Claimed
from gateway.store.outcomes import Outcome, Try

# The code of a chain where no provider could be called: a wait, not a failed attempt.
NOTHING_TRIED = "providers_unavailable"
# No provider of the chain is configured for this address (or serves its platform).
NO_PROVIDER = "no_provider"
# Some of a push's devices got it, others are retried: the reason a retrying delivery shows.
DEVICES_PENDING = "devices_pending"
# The worker claimed the delivery but its job was cancelled before any provider was called.
GIVEN_BACK = "given_back"


@dataclass(frozen=True, slots=True)
class Sent:
    """One address's answer, from the provider of its chain that had the last word."""

    address: Address
    provider: str
    result: SendResult
    # Ambiguous, from a provider that cannot drop a repeat, on a tier that did not opt into
    # at-least-once: the pipeline's shell knows the registry and the policy, so it decides.
    settles_unknown: bool = False


def outcome_of(
    claimed: Claimed,
    tries: Sequence[Try],
    sent: Sequence[Sent],
    retry: RetryPolicy,
    now: dt.datetime,
    rng: random.Random | None = None,
) -> Outcome:
    """The outcome of one attempt at `claimed` whose addresses answered `sent`."""
    tries = list(tries)
    delivered = [(s.provider, s.result) for s in sent if isinstance(s.result, Delivered)]
    if delivered:
        provider, first = delivered[0]
        reference = first.provider_message_id
        # A device no configured provider serves would fail the same way again.
        pending = [
            s.result
            for s in sent
            if isinstance(s.result, Retryable) and not s.settles_unknown and s.result.code != NO_PROVIDER
        ]
        retry_at = next_attempt(retry, claimed.attempts, now, _retry_after(pending), rng) if pending else None
        if retry_at is not None:
            return Outcome(
                claimed,
                "retrying",
                tries=tries,
                provider=provider,
                provider_message_id=reference,
                reason=DEVICES_PENDING,
                error=f"reached {len(delivered)} of {len(sent)}; the rest retried: {pending[-1].error}",
                retry_at=retry_at,
            )
        return Outcome(claimed, "delivered", tries=tries, provider=provider, provider_message_id=reference)
    unknown = [(s.provider, s.result) for s in sent if isinstance(s.result, Retryable) and s.settles_unknown]
    if unknown:
        provider, maybe = unknown[0]
        return Outcome(
            claimed,
            "unknown",
            tries=tries,
            provider=provider,
            provider_message_id=maybe.provider_message_id,
            reason="outcome_unknown",
            error=f"{maybe.error}; not sent again, in case it was delivered",
        )
    retryable = [s.result for s in sent if isinstance(s.result, Retryable)]
    permanent = [s.result for s in sent if isinstance(s.result, Permanent)]
    if retryable:
        return _later(claimed, tries, retryable, retry, now, rng, waited_only=not permanent)
    if not permanent:
        error = "no address was tried"
        return Outcome(claimed, "failed", tries=tries, reason="no_address", error=error, fall_back=True)
    last = permanent[-1]
    return Outcome(claimed, "failed", tries=tries, reason=last.code, error=last.error, fall_back=True)


def given_back(claimed: Claimed, now: dt.datetime) -> Outcome:
    """The claim returned unused: nothing was sent, so the delivery is due again now, on a
    job of its own, and the attempt the claim counted is not spent. Left `sending`, it would
    come back after its lease as a delivery that may have been sent, which a provider that
    cannot drop a repeat would never send."""
    return Outcome(
        claimed,
        "retrying",
        reason=GIVEN_BACK,
        error="its worker's job was cancelled before any provider was called; due again",
        retry_at=now,
        waited=True,
    )


def _later(
    claimed: Claimed,
    tries: list[Try],
    retryable: list[Retryable],
    retry: RetryPolicy,
    now: dt.datetime,
    rng: random.Random | None,
    *,
    waited_only: bool,
) -> Outcome:
    """A retry on the tier's schedule (raised to the providers' Retry-After), or a dead
    letter when the attempts are spent. When no provider was called at all (every one
    paused, open or saturated), the delivery only waits for the first to free up: that
    does not use up an attempt, and the tier's expiry still bounds the wait."""
    retry_after = _retry_after(retryable)
    error = retryable[-1].error
    if waited_only and retry_after is not None and all(r.code == NOTHING_TRIED for r in retryable):
        return Outcome(
            claimed,
            "retrying",
            tries=tries,
            reason=NOTHING_TRIED,
            error=error,
            retry_at=now + dt.timedelta(seconds=retry_after),
            waited=True,
        )
    # Counted from the providers' answers, not from when this attempt began.
    retry_at = next_attempt(retry, claimed.attempts, now, retry_after, rng)
    if retry_at is not None:
        return Outcome(
            claimed, "retrying", tries=tries, reason=retryable[-1].code, error=error, retry_at=retry_at
        )
    return Outcome(
        claimed,
        "dead",
        tries=tries,
        reason="retries_exhausted",
        error=f"gave up after {claimed.attempts} attempts: {error}",
        fall_back=True,
    )


def _retry_after(retryable: Sequence[Retryable]) -> float | None:
    """The longest Retry-After the providers asked for, if any said."""
    said = max((r.retry_after for r in retryable if r.retry_after is not None), default=None)
    # A claim may run up to ON_TIME early (whole-millisecond queue scores): never let that
    # bring the retry before the provider's Retry-After.
    return said + ON_TIME.total_seconds() if said is not None else None
