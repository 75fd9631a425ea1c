"""heap.settle: what a process built at startup is never scanned again, and startup's garbage
is not kept alive by the freeze."""

from __future__ import annotations

import gc
import weakref

from gateway import heap


class _Node:
    def __init__(self) -> None:
        self.itself = self  # a cycle: only the collector frees it


def test_startup_objects_leave_the_scans_and_startup_garbage_is_collected_first() -> None:
    built = [[n] for n in range(1000)]  # containers that live as long as the process
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    try:
        heap.settle()
        assert gone() is None  # collected before the freeze, not frozen alive
        assert gc.get_freeze_count() >= len(built)
        scanned = {id(o) for o in gc.get_objects()}
        assert not any(id(b) in scanned for b in built)
    finally:
        gc.unfreeze()
