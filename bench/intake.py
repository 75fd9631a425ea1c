"""Intake benchmark: accepted intents/s over HTTP beside a bare Litestar endpoint and
redis-benchmark; urgent accept→delivered latency quiet and under a bulk peak; a soak.

    .venv/bin/python -m bench.intake                      # throughput, redis, baseline, peak
    .venv/bin/python -m bench.intake --parts soak         # 115 intents/s for 10 minutes
    .venv/bin/python -m bench.intake --duration 10 --latency-seconds 10   # a quick look

Goals (2-core machine, SQLite): >= 2,000 accepted intents/s sustained for 60 s; quiet urgent
accept→delivered p99 < 100 ms; under 1,000 bulk intents/s: urgent accept p99 < 100 ms,
accept→delivered p50 < 250 ms and p99 < 1 s, every urgent delivered. Writes the figures to
bench/results/latest-intake.json. Exit code 2 when a request got an error answer (a 429
`overloaded` to a bulk or low intent is shedding, not an error). See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

if not __package__:  # run as a file: import `bench` and `gateway` from the project root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.generators import TOOLS
from bench.intake_bench import (
    ACCEPT_GOAL,
    IntakeOptions,
    RedisResult,
    ThroughputResult,
    as_json,
    run_redis_benchmark,
    run_throughput,
)
from bench.intake_load import (
    URGENT_ACCEPT_GOAL_MS,
    URGENT_GOAL_MS,
    URGENT_P50_GOAL_MS,
    LatencyResult,
    LoadOptions,
    SoakResult,
    deployed,
    run_latency,
    run_soak,
)
from bench.intake_stack import Stack
from bench.procs import ROOT, BenchError, Server, plan_cpus
from bench.report import CodeVersion, verdict

PARTS = ("throughput", "redis", "baseline", "peak", "soak")
DEFAULT_PARTS = ("throughput", "redis", "baseline", "peak")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS), help="parts to run (all but soak)"
    )
    parser.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="parts to leave out")
    parser.add_argument("--users", type=int, default=20_000, help="users in the store (20,000)")
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="API processes (1, pinned to a core in the throughput part; N > 1: `notigate serve"
        " --processes N` sharing every core)",
    )
    parser.add_argument("--database-url", help="measure this database instead of a fresh SQLite file")
    parser.add_argument(
        "--shared-stack",
        action="store_true",
        help="run baseline, peak and soak on one stack, one after another (a quick look, the smoke test)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stacks' folders (logs, database)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest-intake.json")
    throughput = parser.add_argument_group("throughput")
    throughput.add_argument("--duration", type=float, default=60.0, help="seconds of the run (60)")
    throughput.add_argument("--connections", type=int, default=64, help="connections (64)")
    throughput.add_argument("--bare-seconds", type=float, default=10.0, help="seconds of the bare run (10)")
    throughput.add_argument("--loadgen", choices=("auto", *TOOLS), default="auto")
    throughput.add_argument(
        "--redis-requests", type=int, default=200_000, help="SETs per redis-benchmark run (200,000)"
    )
    load = parser.add_argument_group("baseline, peak and soak: the whole gateway")
    load.add_argument("--workers", type=int, default=1, help="standard+bulk workers (1)")
    load.add_argument("--bulk-rate", type=int, default=1000, help="bulk intents/s of the peak (1,000)")
    load.add_argument("--bulk-size", type=int, default=100, help="recipients per bulk request (100)")
    load.add_argument("--probe-rate", type=float, default=10.0, help="urgent intents/s (10)")
    load.add_argument("--latency-seconds", type=float, default=60.0, help="seconds of baseline and peak (60)")
    load.add_argument(
        "--drain-timeout", type=float, default=1200.0, help="seconds to wait for the accepted bulk to drain"
    )
    load.add_argument("--soak-rate", type=float, default=115.0, help="intents/s of the soak (115)")
    load.add_argument("--soak-seconds", type=float, default=600.0, help="seconds of the soak (600)")
    load.add_argument("--sample-seconds", type=float, default=10.0, help="the soak's sampling interval (10)")
    return parser.parse_args(argv)


def throughput_section(result: ThroughputResult) -> str:
    cpu = f"{result.server_cpu_us_per_intent:.0f} µs" if result.server_cpu_us_per_intent else "n/a"
    other = f"{result.other_load:.0%}" if result.other_load is not None else "n/a"
    errors = ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "none"
    return "\n".join(
        [
            f"Part 1: intake throughput ({result.tool}; {result.layout})",
            f"  POST /v1/intents    {result.accepted_per_second:8,.0f} accepted/s over {result.seconds:.0f}s"
            f"   p50 {result.p50_ms:6.1f} ms   p99 {result.p99_ms:6.1f} ms",
            f"  POST /bare/intents  {result.bare_per_second:8,.0f} requests/s"
            f"                p50 {result.bare_p50_ms:6.1f} ms   p99 {result.bare_p99_ms:6.1f} ms",
            f"  ratio {result.accepted_per_second / result.bare_per_second:.1%} of the bare endpoint;"
            f" server CPU per intent {cpu}; other load on our cores {other}",
            f"  answered 202: {result.answered:,}; stored: {result.stored:,}; errors: {errors}",
        ]
    )


def redis_section(result: RedisResult | None) -> str:
    if result is None:
        return "Part 2: redis-benchmark is not installed; skipped"
    return (
        "Part 2: redis-benchmark on the same Redis (50 clients)\n"
        f"  SET {result.set_per_second:10,.0f}/s one at a time"
        f"   {result.set_pipelined_per_second:10,.0f}/s pipelined 100"
    )


def latency_section(result: LatencyResult) -> str:
    title = "quiet baseline" if result.mode == "baseline" else "under a bulk peak"
    errors = ", ".join(f"{k}: {v}" for k, v in {**result.bulk_errors, **result.probe_errors}.items())
    lines = [f"Urgent latency, {title} ({result.layout})"]
    if result.mode == "peak":
        drain = f"drained {result.drain_seconds:.0f} s after the load" if result.drained else "NOT drained"
        lines += [
            f"  bulk: {result.bulk_offered} requests offered over {result.seconds:.0f} s;"
            f" {result.bulk_requests} accepted ({result.bulk_intents:,} recipients,"
            f" {result.bulk_intents / result.seconds:,.0f}/s), {result.bulk_shed} shed (429 overloaded)",
            f"  accepted bulk {drain}; its deliveries: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(result.bulk_deliveries.items())),
        ]
    lines += [
        f"  urgent: {result.probes} accepted; accept p50 {result.accept_p50_ms:.1f} ms,"
        f" p99 {result.accept_p99_ms:.1f} ms",
        f"  accept→delivered: p50 {result.delivered_p50_ms:.0f} ms, p99 {result.delivered_p99_ms:.0f} ms,"
        f" max {result.delivered_max_ms:.0f} ms; {result.undelivered} not delivered within 30 s",
        f"  error answers: {errors or 'none'}",
    ]
    return "\n".join(lines)


def latency_summary(result: LatencyResult) -> str:
    return (
        f"  {verdict(result.passed)}  {result.mode}: urgent accept p99 {result.accept_p99_ms:.0f} ms"
        f" (< {URGENT_ACCEPT_GOAL_MS:.0f}), accept→delivered p50 {result.delivered_p50_ms:.0f} ms"
        f" (< {URGENT_P50_GOAL_MS:.0f}), p99 {result.delivered_p99_ms:.0f} ms (< {URGENT_GOAL_MS:.0f}),"
        f" {result.undelivered} undelivered, {result.error_answers} error answers"
    )


def soak_section(result: SoakResult) -> str:
    errors = ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "none"
    lines = [
        f"Soak: {result.rate:g} intents/s for {result.seconds:.0f} s ({result.layout})",
        f"  sent {result.sent:,}, accepted {result.accepted:,}, shed {result.shed:,};"
        f" error answers: {errors};"
        f" urgent {result.urgent}, {result.urgent_undelivered} not delivered",
        "      at s   sent  due jobs   RSS MB  accept p99 ms  urgent p99 ms",
    ]
    for s in result.samples:
        lines.append(
            f"  {s.at_s:8.0f} {s.sent:6} {sum(s.due.values()):9} {sum(s.rss_mb.values()):8.0f}"
            f" {s.accept_p99_ms:14.1f} {s.urgent_p99_ms:14.1f}"
        )
    for name, figures in (("first minute", result.first), ("last minute", result.last)):
        lines.append(f"  {name}: " + ", ".join(f"{k} {v:g}" for k, v in figures.items()))
    return "\n".join(lines)


def _options(args: argparse.Namespace) -> tuple[IntakeOptions, LoadOptions]:
    return IntakeOptions(
        duration=args.duration,
        connections=args.connections,
        api_processes=args.api_processes,
        users=args.users,
        bare_seconds=args.bare_seconds,
        loadgen=args.loadgen,
        database_url=args.database_url,
    ), LoadOptions(
        api_processes=args.api_processes,
        workers=args.workers,
        users=args.users,
        bulk_rate=args.bulk_rate,
        bulk_size=args.bulk_size,
        probe_rate=args.probe_rate,
        latency_seconds=args.latency_seconds,
        drain_timeout=args.drain_timeout,
        soak_rate=args.soak_rate,
        soak_seconds=args.soak_seconds,
        sample_seconds=args.sample_seconds,
    )


class Run:
    """The parts asked for, each on a fresh stack, into one report."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args, self.folder = args, folder
        self.options, self.load = _options(args)
        self.cpus = plan_cpus()
        self.parts = [p for p in PARTS if p in args.parts and p not in args.skip]
        self.version = CodeVersion.of_work_tree()
        self.report: dict[str, object] = {
            "code": as_json(self.version),
            "options": {**as_json(self.options), **as_json(self.load), "parts": self.parts},
            "cpus": self.cpus.note,
        }
        self.summary: list[str] = []
        self.error_answers = 0

    def stack(self, name: str) -> Stack:
        print(f"\n{name}: a stack with {self.args.users:,} users in {self.folder / name} ...", flush=True)
        return Stack(self.folder / name, users=self.args.users, database_url=self.args.database_url).start()

    def intake_alone(self) -> None:
        stack = self.stack("throughput")
        try:
            if "throughput" in self.parts:
                throughput = run_throughput(stack, self.options, self.cpus, print)
                self.report["throughput"] = as_json(throughput)
                self.error_answers += sum(throughput.errors.values())
                print(throughput_section(throughput), flush=True)
                self.summary.append(
                    f"  {verdict(throughput.passed)}  {throughput.accepted_per_second:,.0f} accepted/s"
                    f" (goal >= {ACCEPT_GOAL:,.0f}, no errors)"
                )
            if "redis" in self.parts:
                redis = run_redis_benchmark(stack, self.args.redis_requests)
                self.report["redis"] = as_json(redis) if redis else None
                print("\n" + redis_section(redis), flush=True)
        finally:
            stack.close()

    def whole_gateway(self) -> None:
        """Baseline, peak and soak: each on a fresh stack, or one after another on one
        deployment with `--shared-stack` (quicker; later parts see the earlier ones' rows)."""
        parts = [p for p in ("baseline", "peak", "soak") if p in self.parts]
        groups = [parts] if self.args.shared_stack and parts else [[p] for p in parts]
        for group in groups:
            stack = self.stack("+".join(group))
            try:
                with deployed(stack, self.load) as (api, layout):
                    for part in group:
                        self.gateway_part(part, stack, api, layout)
            finally:
                stack.close()

    def gateway_part(self, part: str, stack: Stack, api: Server, layout: str) -> None:
        if part == "soak":
            soak = run_soak(stack, api, layout, self.load, print)
            self.report["soak"] = as_json(soak)
            self.error_answers += soak.error_answers
            print(soak_section(soak), flush=True)
            self.summary.append(
                f"  soak: first minute {soak.first}; last minute {soak.last};"
                f" {soak.error_answers} error answers, {soak.urgent_undelivered} urgent undelivered"
            )
            return
        load = self.load if part == "peak" else dataclasses.replace(self.load, bulk_rate=0)
        latency = run_latency(stack, api, layout, load, print)
        self.report[part] = as_json(latency)
        self.error_answers += latency.error_answers
        print(latency_section(latency), flush=True)
        self.summary.append(latency_summary(latency))

    def all(self) -> None:
        print(f"Notigate intake benchmark, code {self.version.describe()}; {self.cpus.note}", flush=True)
        if "throughput" in self.parts or "redis" in self.parts:
            self.intake_alone()
        self.whole_gateway()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    folder = Path(tempfile.mkdtemp(prefix="notigate-intake-bench-"))
    run = Run(args, folder)
    try:
        run.all()
    except BenchError as exc:
        print(f"\nbench: FAILED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; processes stopped", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print("\nSummary\n" + "\n".join(run.summary))
    run.report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run.report["error_answers"] = run.error_answers
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(run.report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.output}")
    if run.error_answers:
        print(f"bench: FAILED: {run.error_answers} requests got an error answer", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
