"""cProfile results as ranked hot spots with their share of the profiled time.

Used for `decide()` in-process and for the dry-run server (which dumps its profile on
shutdown). cProfile slows every Python call several-fold and unevenly, so these are read
for where the time goes, never for how fast anything is.
"""

from __future__ import annotations

import pstats
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOP = 25


@dataclass(frozen=True, slots=True)
class HotSpot:
    """One function of a profile, with its share of the profiled time."""

    function: str
    calls: int
    tottime: float
    cumtime: float
    total: float

    @property
    def cum_share(self) -> float:
        return self.cumtime / self.total

    @property
    def tot_share(self) -> float:
        return self.tottime / self.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "calls": self.calls,
            "tottime_s": round(self.tottime, 4),
            "cumtime_s": round(self.cumtime, 4),
            "cum_percent": round(100 * self.cum_share, 1),
            "tot_percent": round(100 * self.tot_share, 1),
        }


@dataclass(frozen=True, slots=True)
class Profile:
    """The top functions of one profile, by cumulative and by own time."""

    subject: str  # what ran, e.g. "decide() with cel-python, 4,000 decisions"
    by_cumulative: list[HotSpot]
    by_tottime: list[HotSpot]

    @classmethod
    def from_stats(cls, subject: str, stats: pstats.Stats, top: int = TOP) -> Profile:
        spots = _hot_spots(stats)
        return cls(
            subject=subject,
            by_cumulative=sorted(spots, key=lambda h: h.cumtime, reverse=True)[:top],
            by_tottime=sorted(spots, key=lambda h: h.tottime, reverse=True)[:top],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "by_cumulative": [h.as_dict() for h in self.by_cumulative],
            "by_tottime": [h.as_dict() for h in self.by_tottime],
        }


def _hot_spots(stats: pstats.Stats) -> list[HotSpot]:
    """Every function, with shares of the total own time (the time the profile covers)."""
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(tottime for _, _, tottime, _, _ in raw.values()) or 1.0
    return [
        HotSpot(_label(where), calls, tottime, cumtime, total)
        for where, (_, calls, tottime, cumtime, _) in raw.items()
    ]


def _label(where: tuple[str, int, str]) -> str:
    """`gateway/policy/engine.py:312(check_channel)`: short enough to read in a table."""
    file, line, name = where
    if file == "~":
        return name  # a builtin, e.g. <method 'append' of 'list' objects>
    path = Path(file)
    for root in _ROOTS:
        if path.is_relative_to(root):
            return f"{path.relative_to(root).as_posix()}:{line}({name})"
    return f"{path.name}:{line}({name})"


# Most specific first: the virtualenv's site-packages lies inside the project root.
_ROOTS = tuple(
    Path(p)
    for p in dict.fromkeys(
        (
            sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"],
            str(Path(__file__).resolve().parents[1]),
            sysconfig.get_paths()["stdlib"],
        )
    )
)
