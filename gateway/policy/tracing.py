"""Who keeps a decision's trace: the explanation is paid for only when someone will read it.

Dry-run, `notigate explain`, the policy suites and the property tests read every step the
engine took (`Tracer`). Intake stores a decision's deliveries and suppressions, never its
trace, so it passes `NO_TRACE`: the engine then builds no `TraceStep` and formats none of the
details that only the trace carries. The decision itself (deliveries, suppressions and their
details, fallback, cost) is the same either way; `tests/policy/test_properties.py` holds the
engine to that.
"""

from __future__ import annotations

from typing import Final

from gateway.model import TraceStep


class Tracer:
    """Collects every step of one decision, in order: `decide()` builds one per call unless given."""

    recording: bool = True

    def __init__(self) -> None:
        self.steps: list[TraceStep] = []

    def add(self, step: TraceStep) -> None:
        self.steps.append(step)


class NoTrace(Tracer):
    """Keeps nothing, and tells the engine (`recording`) not to build what it would drop."""

    recording = False

    def add(self, step: TraceStep) -> None:
        return None


NO_TRACE: Final = NoTrace()
