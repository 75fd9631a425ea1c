"""One table from the benchmarks' JSON reports: `python -m bench.summary bench/results/*.json`.

`bench/run_all.sh` writes a report per benchmark and variant; this reads them back and
prints, per report, each figure the issue's goals name, the goal and whether it was met, so
the figures can be pasted into bench/README.md and the issue's note as they are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str]  # figure, measured, goal, verdict


def _verdict(passed: bool | None) -> str:
    return "" if passed is None else ("PASS" if passed else "MISS")


def _ms(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:,.0f} ms"


def policy_rows(report: dict[str, Any]) -> Iterator[Row]:
    for line in report.get("summary", []):
        yield line["goal"], line["measured"], "", _verdict(line["pass"])


def delivery_rows(report: dict[str, Any]) -> Iterator[Row]:
    for run in report.get("runs", []):
        yield f"{run['label']}: deliveries/s", f"{run['per_second']:,.0f}", "", ""
        yield f"{run['label']}: worker CPU/delivery", f"{run['cpu_us_per_delivery']:,.0f} µs", "", ""
    summary = report["summary"]
    rate, own, dev = summary["per_second"], summary["own_cpu_us_per_delivery"], summary.get("dev_per_second")
    yield "one worker: deliveries/s", f"{rate:,.0f}", ">= 1,000", _verdict(rate >= 1000)
    own_figure = f"own CPU per delivery (beyond bare {summary['fastest_bare']})"
    yield own_figure, f"{own:,.0f} µs", "<= 500 µs", _verdict(own <= 500)
    if dev is not None:
        yield "dev profile: deliveries/s", f"{dev:,.0f}", ">= 1,000", _verdict(dev >= 1000)


def intake_rows(report: dict[str, Any]) -> Iterator[Row]:
    if t := report.get("throughput"):
        ok = t["accepted_per_second"] >= 2000 and not t["errors"]
        yield "accepted intents/s", f"{t['accepted_per_second']:,.0f}", ">= 2,000", _verdict(ok)
        yield "bare endpoint requests/s", f"{t['bare_per_second']:,.0f}", "", ""
    for part in ("baseline", "peak"):
        if (p := report.get(part)) is None:
            continue
        if part == "peak":
            yield (
                "peak: bulk requests offered / accepted / shed",
                (f"{p['bulk_offered']} / {p['bulk_requests']} / {p['bulk_shed']}"),
                "",
                "",
            )
            drain = f"{p['drain_seconds']:,.0f} s" if p["drained"] else "not drained"
            yield "peak: accepted bulk recipients, drain", f"{p['bulk_intents']:,}, {drain}", "", ""
        p99_goal = 100.0 if part == "baseline" else 1000.0
        for label, key, goal in (
            ("urgent accept p99", "accept_p99_ms", 100.0),
            ("accept→delivered p50", "delivered_p50_ms", 250.0),
            ("accept→delivered p99", "delivered_p99_ms", p99_goal),
        ):
            yield f"{part}: {label}", _ms(p[key]), f"< {goal:,.0f} ms", _verdict(p[key] < goal)
        yield f"{part}: urgent undelivered", str(p["undelivered"]), "0", _verdict(p["undelivered"] == 0)
    if s := report.get("soak"):
        for key in ("due_jobs", "rss_mb", "accept_p99_ms", "urgent_p99_ms"):
            first, last = s["first"].get(key), s["last"].get(key)
            yield f"soak {key}: first / last minute", f"{first} / {last}", "flat", ""
    yield "error answers", str(report.get("error_answers", 0)), "0", _verdict(not report.get("error_answers"))


def rows_of(report: dict[str, Any]) -> Iterator[Row]:
    if "engine" in report or "http" in report:
        return policy_rows(report)
    if "runs" in report:
        return delivery_rows(report)
    return intake_rows(report)


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    table: list[tuple[str, ...]] = [("report", "figure", "measured", "goal", "result")]
    for path in paths:
        report = json.loads(path.read_text())
        table += [(path.stem, *row) for row in rows_of(report)]
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for n, row in enumerate(table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
