"""Property tests of `outcome_of`: what an attempt's answers add up to, with no I/O.

The invariants are the delivery rules of docs/architecture.md and docs/providers.md: one
delivered address is enough for the channel, and the others are retried alone; an answer
that may have been taken is never sent again; a retryable failure retries on the tier's
schedule (never before a provider's Retry-After) or dead-letters when the attempts are
spent; a wait for paused providers spends no attempt; only refusals for good fail the
channel over.
"""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given
from hypothesis import strategies as st

from gateway.delivery.outcome import DEVICES_PENDING, NO_PROVIDER, NOTHING_TRIED, Sent, outcome_of
from gateway.policy.compiled import RetryPolicy
from gateway.providers.base import Address, Delivered, Permanent, Retryable, SendResult
from gateway.store.claims import ON_TIME, Claimed
from gateway.store.outcomes import Try
from tests.harness import a_claim

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
PROVIDERS = ("fcm", "apns", "sendgrid", "smtp", "twilio")


def claimed(attempts: int) -> Claimed:
    return a_claim(channel="push", providers=list(PROVIDERS[:2]), attempts=attempts)


results: st.SearchStrategy[SendResult] = st.one_of(
    st.builds(Delivered, provider_message_id=st.one_of(st.none(), st.text(min_size=1, max_size=8))),
    st.builds(
        Retryable,
        error=st.sampled_from(["503", "timed out", "paused"]),
        retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=600)),
        code=st.sampled_from(["retryable", "timeout", NOTHING_TRIED, NO_PROVIDER]),
        ambiguous=st.booleans(),
    ),
    st.builds(
        Permanent,
        code=st.sampled_from(["invalid_address", "rejected", "unregistered"]),
        error=st.just("refused"),
        address_invalid=st.booleans(),
    ),
)
sends = st.lists(
    st.tuples(st.sampled_from(PROVIDERS), results, st.booleans()).map(
        lambda t: Sent(
            Address("device", "tok"), t[0], t[1], settles_unknown=t[2] and isinstance(t[1], Retryable)
        )
    ),
    min_size=1,
    max_size=5,
)
policies = st.builds(
    RetryPolicy,
    schedule=st.lists(st.integers(1, 600).map(lambda s: dt.timedelta(seconds=s)), min_size=1, max_size=4).map(
        tuple
    ),
    max_attempts=st.integers(1, 6),
    jitter=st.sampled_from([0.0, 0.1, 0.5]),
    max_delay=st.one_of(st.none(), st.integers(1, 900).map(lambda s: dt.timedelta(seconds=s))),
)


@given(sends, policies, st.integers(1, 8), st.integers(0, 2**32))
def test_an_attempt_is_judged_by_the_rules(
    sent: list[Sent], retry: RetryPolicy, attempts: int, seed: int
) -> None:
    tries = [Try(s.provider, s.result.outcome) for s in sent]
    outcome = outcome_of(claimed(attempts), tries, sent, retry, NOW, random.Random(seed))
    assert list(outcome.tries) == tries  # every call is on the record, whatever the verdict
    delivered = [s for s in sent if isinstance(s.result, Delivered)]
    unknown = [s for s in sent if isinstance(s.result, Retryable) and s.settles_unknown]
    retryable = [s.result for s in sent if isinstance(s.result, Retryable)]
    pending = [
        s
        for s in sent
        if isinstance(s.result, Retryable) and not s.settles_unknown and s.result.code != NO_PROVIDER
    ]
    if delivered:
        # One device reached is the channel reached: it never falls back. The devices that
        # failed for a reason worth retrying are retried while the tier allows.
        assert outcome.provider == delivered[0].provider
        assert not outcome.fall_back
        if pending and attempts < retry.max_attempts:
            assert (outcome.status, outcome.reason) == ("retrying", DEVICES_PENDING)
            assert outcome.retry_at is not None and outcome.retry_at >= NOW
        else:
            assert outcome.status == "delivered" and outcome.retry_at is None
    elif unknown:
        # It may have been taken: never sent again, here or by the fallback chain.
        assert outcome.status == "unknown"
        assert outcome.provider == unknown[0].provider
        assert not outcome.fall_back and outcome.retry_at is None
    elif retryable:
        assert outcome.status in ("retrying", "dead")
        if outcome.status == "dead":
            assert attempts >= retry.max_attempts and outcome.fall_back
        else:
            assert outcome.retry_at is not None and outcome.retry_at >= NOW
            assert not outcome.fall_back
            said = [r.retry_after for r in retryable if r.retry_after is not None]
            if outcome.waited:
                # Nothing was called: the wait ends when the first provider frees up.
                assert all(r.code == NOTHING_TRIED for r in retryable)
                assert not any(isinstance(s.result, Permanent) for s in sent)
                assert outcome.retry_at == NOW + dt.timedelta(seconds=max(said)) + ON_TIME
            elif said and (retry.max_delay is None or retry.max_delay.total_seconds() >= max(said)):
                # Never before a provider's Retry-After.
                assert outcome.retry_at >= NOW + dt.timedelta(seconds=max(said))
        if attempts < retry.max_attempts:
            assert outcome.status == "retrying"
    else:
        # Every address refused for good: the channel fails over, naming the last refusal.
        permanent = [s.result for s in sent if isinstance(s.result, Permanent)]
        assert outcome.status == "failed" and outcome.fall_back
        assert outcome.reason == permanent[-1].code
        assert outcome.retry_at is None


def test_no_address_answered_fails_the_channel_over() -> None:
    outcome = outcome_of(claimed(1), [], [], RetryPolicy((dt.timedelta(seconds=1),), 3, 0.0, None), NOW)
    assert (outcome.status, outcome.reason, outcome.fall_back) == ("failed", "no_address", True)
