"""Ids keep their ULID layout and order when the encoding gets faster."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ids import encode, new_id

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def by_division(value: int) -> str:
    """The original encoding: 26 divisions by 32, least significant first."""
    chars = []
    for _ in range(26):
        value, index = divmod(value, 32)
        chars.append(ALPHABET[index])
    return "".join(reversed(chars))


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_encoding_matches_the_division_reference(value: int) -> None:
    assert encode(value) == by_division(value)


@settings(max_examples=100)
@given(st.integers(min_value=0, max_value=2**128 - 1), st.integers(min_value=0, max_value=2**128 - 1))
def test_encoding_keeps_the_order_of_values(a: int, b: int) -> None:
    assert (encode(a) < encode(b)) == (a < b)


def test_an_id_is_its_prefix_and_26_crockford_characters_starting_with_the_time() -> None:
    first, second = new_id("n"), new_id("n")
    assert re.fullmatch(r"n_[0-9A-HJKMNP-TV-Z]{26}", first)
    assert first != second
    assert first[2:12] <= second[2:12]  # the 48-bit millisecond part never goes back


def test_the_time_part_comes_from_the_clock_given() -> None:
    """Ids made under an injected clock sort by that clock, without waiting a millisecond."""
    later = new_id("n", clock=lambda: 1_800_000_000.002)
    earlier = new_id("n", clock=lambda: 1_800_000_000.001)
    assert earlier < later
    assert new_id("n", clock=lambda: 0.0)[2:12] == "0000000000"
    assert later[2:12] == by_division(1_800_000_000_002 << 80)[:10]
