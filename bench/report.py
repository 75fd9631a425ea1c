"""The printed report and its JSON twin (bench/results/latest-policy.json).

Kept apart from the measuring code so the figures are computed once and only formatted
here: the table a person reads and the JSON a script diffs always say the same thing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.engine_bench import ENGINE_GOAL_PER_SECOND, EngineResult
from bench.http_bench import HTTP_GOAL_RATIO, HttpResult, TargetResult
from bench.procs import ROOT, CpuPlan
from bench.profiling import HotSpot, Profile
from bench.workload import MixProfile


@dataclass(frozen=True, slots=True)
class CodeVersion:
    """The commit measured, and whether the tree differed from it (then the figures are not that commit's)."""

    commit: str | None
    dirty: bool | None

    @classmethod
    def of_work_tree(cls) -> CodeVersion:
        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
            )
            return done.stdout.strip()

        try:
            commit = git("rev-parse", "--short=12", "HEAD")
            changes = git(
                "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results"
            )
        except (OSError, subprocess.SubprocessError):
            return cls(None, None)
        return cls(commit, bool(changes))

    def describe(self) -> str:
        if self.commit is None:
            return "of unknown commit (no git)"
        return self.commit + (" + uncommitted changes" if self.dirty else "")


def verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


@dataclass
class Report:
    """Everything one run measured, in the order it was measured."""

    policy_version: str
    cpus: CpuPlan
    mix: MixProfile
    code: CodeVersion = field(default_factory=CodeVersion.of_work_tree)
    engine: list[EngineResult] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    http: HttpResult | None = None

    def goals(self) -> list[tuple[str, str, bool]]:
        """(goal, measured, passed) for the summary table and the JSON."""
        rows = [
            (
                f"engine {r.runtime}: >= {ENGINE_GOAL_PER_SECOND:,} decisions/s",
                f"{r.per_second:,.0f}/s",
                r.passed,
            )
            for r in self.engine
        ]
        if self.http is not None:
            rows.append(
                (f"HTTP dry-run/bare: >= {HTTP_GOAL_RATIO:.0%}", f"{self.http.ratio:.1%}", self.http.passed)
            )
        return rows

    @property
    def all_passed(self) -> bool:
        return all(passed for _, _, passed in self.goals())

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "pinning": self.cpus.note,
            },
            "code": {"commit": self.code.commit, "dirty": self.code.dirty},
            "policy_version": self.policy_version,
            "mix": self.mix.as_dict(),
            "engine": [r.as_dict() for r in self.engine],
            "http": self.http.as_dict() if self.http else None,
            "profiles": [p.as_dict() for p in self.profiles],
            "summary": [{"goal": g, "measured": m, "pass": p} for g, m, p in self.goals()],
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")


# -- text -------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Left-aligned first column, right-aligned figures."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return indent + "  ".join(
            [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
        )

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _shares(counts: dict[str, Any], total: int, limit: int = 14) -> str:
    return ", ".join(f"{k} {v / total:.0%}" for k, v in list(counts.items())[:limit])


def header(report: Report) -> str:
    return "\n".join(
        [
            "Notigate policy benchmark",
            f"  code {report.code.describe()}, policy {report.policy_version}, "
            f"python {platform.python_version()}, {os.cpu_count()} cpus",
            f"  {report.cpus.note}",
        ]
    )


def mix_section(mix: MixProfile) -> str:
    data = mix.as_dict()
    outcomes = ", ".join(f"{k} {v:.0%}" for k, v in data["outcomes_share"].items())
    return "\n".join(
        [
            f"Mix: {mix.cases} cases; history entries mean {data['history_entries']['mean']}, "
            f"max {data['history_entries']['max']}",
            f"  intents:  {_shares(data['kinds'], mix.cases)}",
            f"  outcomes (share of decisions): {outcomes}",
        ]
    )


def engine_section(results: Sequence[EngineResult]) -> str:
    rows = [
        [
            r.runtime,
            f"{r.decisions:,}",
            f"{r.seconds:.2f}",
            f"{r.per_second:,.0f}",
            f"{r.latency.mean_us:.1f}",
            f"{r.latency.p50_us:.1f}",
            f"{r.latency.p99_us:.1f}",
            _share(r.other_load),
            verdict(r.passed),
        ]
        for r in results
    ]
    headers = ["runtime", "decisions", "seconds", "decisions/s", "mean µs", "p50 µs", "p99 µs", "other load"]
    headers.append(f"goal >= {ENGINE_GOAL_PER_SECOND:,}/s")
    return "Part 1: decide() alone, one core\n" + _table(headers, rows)


def profile_section(profile: Profile) -> str:
    def rows(spots: Sequence[HotSpot]) -> list[list[str]]:
        return [
            [h.function, f"{h.calls:,}", f"{100 * h.tot_share:.1f}", f"{100 * h.cum_share:.1f}"]
            for h in spots
        ]

    headers = ["function", "calls", "tot %", "cum %"]
    title = f"Profile of {profile.subject} (cProfile; shares of the profiled time)"
    return "\n".join(
        [
            title,
            "  top 25 by cumulative time",
            _table(headers, rows(profile.by_cumulative), indent="    "),
            "  top 25 by own time (tottime)",
            _table(headers, rows(profile.by_tottime), indent="    "),
        ]
    )


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def http_section(http: HttpResult) -> str:
    settings = http.settings

    def row(result: TargetResult) -> list[str]:
        latency = result.latency
        return [
            f"{result.target.name} {result.target.path}",
            f"{result.requests:,}",
            f"{result.per_second:,.0f}",
            f"{latency.p50_us / 1000:.2f}",
            f"{latency.p99_us / 1000:.2f}",
            str(sum(result.errors.values())),
            _share(result.server_cpu_share),
            _share(result.generator_cpu_share),
            _share(result.other_load),
        ]

    headers = ["endpoint", "requests", "requests/s", "p50 ms", "p99 ms", "errors", "server CPU", "gen CPU"]
    headers.append("other load")
    rounds = ", ".join(f"{r:.1%}" for r in http.round_ratios)
    warnings = http.warnings()
    return "\n".join(
        [
            f"Part 2: HTTP over loopback ({http.tool}, {settings.connections} keep-alive connections, "
            f"{settings.duration:g}s per endpoint in {settings.rounds} alternating rounds after "
            f"{settings.warmup:g}s warm-up, {settings.bodies} distinct bodies, {settings.runtime})",
            _table(headers, [row(http.bare), row(http.dry_run)]),
            f"  dry-run/bare: {http.ratio:.1%} (rounds: {rounds}; goal >= {HTTP_GOAL_RATIO:.0%}: "
            f"{verdict(http.passed)})",
            "  check: "
            + (
                "WARNING " + "; ".join(warnings)
                if warnings
                else "servers saturated their core, generator had headroom"
            ),
        ]
    )


def summary_section(report: Report) -> str:
    rows = [[goal, measured, verdict(passed)] for goal, measured, passed in report.goals()]
    return "Summary\n" + _table(["goal", "measured", "result"], rows)
