"""Where a worker's CPU goes, by part of the delivery path, from a cProfile of the worker.

Each function's own time (tottime) goes to the part its file belongs to (first match
below). A builtin (`~`: a C method such as `sqlite3.Cursor.execute`, `hmac.digest`,
`socket.send`) has no file: its time goes to its callers' parts, in proportion to what
each caller spent in it. Covers the event-loop thread only: SQLite runs its statements on
aiosqlite's threads, which the bench reports separately from /proc.
"""

from __future__ import annotations

import pstats
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.profiling import Profile

# (part, path fragments), first match wins: gateway's own modules before the libraries.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "start-up (imports, policy)",
        (
            "<frozen importlib",
            "/importlib/",
            "/gateway/policy/",
            "/lark/",
            "/celpy/",
            "/yaml/",
            "/jsonschema",
            "/referencing/",
            "/httpx/_config.py",  # an SSL context per client, built once
            "/gateway/providers/registry.py",
            "/gateway/providers/spec.py",
        ),
    ),
    (
        "store (SQL)",
        ("/gateway/store/", "/sqlalchemy/", "/sqlmodel/", "/aiosqlite/", "/sqlite3/", "/greenlet/"),
    ),
    ("render", ("/gateway/templating/", "/jinja2/", "/markupsafe/")),
    ("Redis guard", ("/gateway/providers/guard.py", "/gateway/token_bucket.py")),
    (
        "adapter + HTTP client",
        (
            "/gateway/providers/",
            "/aiohttp/",
            "/multidict/",
            "/yarl/",
            "/aiohappyeyeballs/",
            "/httpx/",
            "/httpcore/",
            "/h11/",
            "/anyio/",
            "/sniffio/",
            "/hmac.py",
            "/msgspec/",
        ),
    ),
    ("Redis + arq", ("/redis/", "/arq/", "/gateway/queue/", "/gateway/history.py", "/gateway/redis_keys.py")),
    ("pipeline", ("/gateway/delivery/",)),
    ("event loop", ("/asyncio/", "/selectors.py", "/uvloop/")),
    ("logging", ("/logging/",)),
)
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Breakdown:
    """Seconds of profiled CPU per part, and the profile's top functions."""

    seconds: dict[str, float]
    total: float
    profile: Profile

    def shares(self) -> dict[str, float]:
        return {part: s / self.total for part, s in self.seconds.items()} if self.total else {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "profiled_cpu_seconds": round(self.total, 3),
            "parts_percent": {part: round(100 * share, 1) for part, share in self.shares().items()},
            "top": self.profile.as_dict(),
        }


def part_of(file: str) -> str | None:
    if file == "~":
        return None
    path = file.replace("\\", "/")
    for part, fragments in PARTS:
        if any(fragment in path for fragment in fragments):
            return part
    return OTHER


def breakdown(stats_file: Path, subject: str) -> Breakdown:
    stats = pstats.Stats(str(stats_file))
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    seconds: dict[str, float] = defaultdict(float)

    def attribute(where: tuple[str, int, str], tottime: float, depth: int) -> None:
        part = part_of(where[0])
        if part is not None:
            seconds[part] += tottime
            return
        callers: dict[tuple[str, int, str], tuple[Any, ...]] = raw.get(where, (0, 0, 0.0, 0.0, {}))[4]
        spent = sum(edge[2] for edge in callers.values())
        if depth > 3 or not callers or spent <= 0:
            seconds[OTHER] += tottime
            return
        for caller, edge in callers.items():
            attribute(caller, tottime * edge[2] / spent, depth + 1)

    for where, (_, _, tottime, _, _) in raw.items():
        if tottime > 0:
            attribute(where, tottime, 0)
    total = sum(seconds.values())
    ordered = dict(sorted(seconds.items(), key=lambda item: item[1], reverse=True))
    return Breakdown(ordered, total, Profile.from_stats(subject, stats))
