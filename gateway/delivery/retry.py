"""When to try a failed delivery again: the tier's schedule, with jitter, within its limits."""

from __future__ import annotations

import datetime as dt
import random

from gateway.policy.compiled import RetryPolicy


def next_attempt(
    policy: RetryPolicy,
    attempts: int,
    now: dt.datetime,
    retry_after: float | None,
    rng: random.Random | None = None,
) -> dt.datetime | None:
    """The time of attempt `attempts + 1`, or None when the tier allows no more attempts.

    `attempts` counts tries so far. The delay is the schedule's entry for this retry (the
    last entry repeats), spread by +-jitter so a provider outage does not end in a
    thundering herd, raised to the provider's Retry-After, and capped at max_delay.
    """
    if attempts >= policy.max_attempts:
        return None
    base = policy.schedule[min(attempts - 1, len(policy.schedule) - 1)].total_seconds()
    spread = (rng or random).uniform(-policy.jitter, policy.jitter) if policy.jitter else 0.0
    delay = base * (1 + spread)
    if retry_after is not None:
        delay = max(delay, retry_after)
    if policy.max_delay is not None:
        delay = min(delay, policy.max_delay.total_seconds())
    return now + dt.timedelta(seconds=max(delay, 0.0))
