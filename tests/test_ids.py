"""Ids keep their ULID layout and order when the encoding gets faster."""

from __future__ import annotations

import os
import re
import threading

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


def test_random_parts_never_repeat_across_buffers_threads_and_a_fork() -> None:
    """The random parts come from a per-thread buffer of kernel randomness: ids of one thread
    across many refills, of other threads, and of a forked child are all distinct."""
    made = [new_id("d") for _ in range(2_000)]  # several refills of the buffer
    others: list[str] = []
    threads = [
        threading.Thread(target=lambda: others.extend(new_id("d") for _ in range(500))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child's next id, had it kept its parent's buffer, would be the parent's
        os.write(write, new_id("d").encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    os.close(read)
    made.append(new_id("d"))
    assert status == 0
    randoms = [i[-16:] for i in [*made, *others, from_child]]  # the 80 random bits
    assert len(set(randoms)) == len(randoms) == 2_000 + 2_000 + 2
