"""Per-key quotas in a real Redis: a micro-batch's takes in one script call, in order."""

from __future__ import annotations

import pytest

from gateway.quota import QuotaSpec
from gateway.services import Services


async def test_a_batch_of_takes_runs_in_order_each_seeing_the_ones_before(services: Services) -> None:
    waits = await services.quota.take_many(
        [
            QuotaSpec("k_a", 1.0, 2),
            QuotaSpec("k_b", 1.0, 1),
            QuotaSpec("k_a", 1.0, 2),
            QuotaSpec("k_a", 1.0, 2),  # k_a's burst of 2 is spent by the two before
            QuotaSpec("k_b", 1.0, 1),
        ]
    )
    assert [wait == 0 for wait in waits] == [True, True, True, False, False]
    assert all(0 < wait <= 1 for wait in waits[3:])


async def test_a_bulk_take_is_admitted_whole_and_the_next_waits_for_the_refill(services: Services) -> None:
    bulk, after = await services.quota.take_many([QuotaSpec("k_c", 10.0, 5, 8), QuotaSpec("k_c", 10.0, 5)])
    assert bulk == 0
    assert after == pytest.approx(0.4, abs=0.05)  # 5 - 8 = -3 tokens: 4 to refill at 10/s


async def test_no_takes_ask_nothing_of_redis(services: Services) -> None:
    assert await services.quota.take_many([]) == []
