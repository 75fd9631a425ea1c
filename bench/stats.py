"""Latency summaries shared by the engine timer and the built-in load generator.

Both report the same figures (mean, p50, p99) computed the same way, so the engine and
HTTP sections of the report can be compared without wondering how a percentile was taken.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: a value that was actually observed, never an interpolation."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


@dataclass(frozen=True, slots=True)
class Latency:
    """Mean and tail of one run, in microseconds."""

    mean_us: float
    p50_us: float
    p99_us: float

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int]) -> Latency:
        ordered = sorted(samples_ns)
        if not ordered:
            return cls(math.nan, math.nan, math.nan)
        return cls(
            mean_us=sum(ordered) / len(ordered) / 1000,
            p50_us=percentile(ordered, 50) / 1000,
            p99_us=percentile(ordered, 99) / 1000,
        )

    def as_dict(self) -> dict[str, Any]:
        return {key: round(value, 1) for key, value in asdict(self).items()}
