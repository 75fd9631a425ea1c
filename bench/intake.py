"""Intake benchmark: accepted intents/s over HTTP, accept latency, and urgent accept→delivered
latency under a bulk load, beside a bare Litestar endpoint and redis-benchmark.

    .venv/bin/python -m bench.intake                 # the goals' settings (~3 minutes)
    .venv/bin/python -m bench.intake --duration 10 --latency-seconds 10   # a quick look

Goals (2-core machine, SQLite): >= 2,000 accepted intents/s sustained for 60 s; urgent
accept→delivered p99 < 1 s under 1,000 bulk intents/s. Writes the figures to
bench/results/latest-intake.json. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
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
    URGENT_GOAL_MS,
    IntakeOptions,
    LatencyResult,
    RedisResult,
    ThroughputResult,
    as_json,
    run_latency,
    run_redis_benchmark,
    run_throughput,
)
from bench.intake_stack import Stack
from bench.procs import ROOT, BenchError, plan_cpus
from bench.report import CodeVersion, verdict

PARTS = ("throughput", "redis", "latency")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the throughput run (60)")
    parser.add_argument("--connections", type=int, default=64, help="connections of the throughput run (64)")
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="API processes (1, pinned to a core; N > 1: `notigate serve --processes N`, slower here)",
    )
    parser.add_argument("--users", type=int, default=20_000, help="users in the store (20,000)")
    parser.add_argument(
        "--bare-seconds", type=float, default=10.0, help="seconds of the bare endpoint run (10)"
    )
    parser.add_argument(
        "--bulk-rate", type=int, default=1000, help="bulk intents/s of the latency run (1,000)"
    )
    parser.add_argument("--bulk-size", type=int, default=100, help="recipients per bulk request (100)")
    parser.add_argument(
        "--probe-rate", type=float, default=10.0, help="urgent intents/s of the latency run (10)"
    )
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="seconds of the latency run (30)")
    parser.add_argument("--loadgen", choices=("auto", *TOOLS), default="auto")
    parser.add_argument("--database-url", help="measure this database instead of a fresh SQLite file")
    parser.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="parts to leave out")
    parser.add_argument("--keep", action="store_true", help="keep the stacks' folders (logs, database)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest-intake.json")
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
    return "\n".join(
        [
            "Part 3: urgent latency under a bulk load (API + 2 workers sharing both cores)",
            f"  bulk: {result.bulk_intents:,} low intents accepted in {result.bulk_requests} requests"
            f" ({result.bulk_intents / result.seconds:,.0f}/s), {result.bulk_errors} failed;"
            f" {result.bulk_delivered:,} bulk deliveries made meanwhile",
            f"  urgent: {result.probes} accepted, {result.probe_errors} failed;"
            f" accept p50 {result.accept_p50_ms:.1f} ms, p99 {result.accept_p99_ms:.1f} ms",
            f"  accept→delivered: p50 {result.delivered_p50_ms:.0f} ms, p99 {result.delivered_p99_ms:.0f} ms,"
            f" max {result.delivered_max_ms:.0f} ms; {result.undelivered} not delivered within 30 s",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    options = IntakeOptions(
        duration=args.duration,
        connections=args.connections,
        api_processes=args.api_processes,
        users=args.users,
        bare_seconds=args.bare_seconds,
        bulk_rate=args.bulk_rate,
        bulk_size=args.bulk_size,
        probe_rate=args.probe_rate,
        latency_seconds=args.latency_seconds,
        loadgen=args.loadgen,
        database_url=args.database_url,
    )
    cpus = plan_cpus()
    version = CodeVersion.of_work_tree()
    print(f"Notigate intake benchmark, code {version.describe()}; {cpus.note}", flush=True)
    report: dict[str, object] = {"code": as_json(version), "options": as_json(options), "cpus": cpus.note}
    summary: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="notigate-intake-bench-"))
    try:
        if "throughput" not in args.skip or "redis" not in args.skip:
            print(f"\nPart 1: a stack with {args.users:,} users in {folder / 'throughput'} ...", flush=True)
            stack = Stack(folder / "throughput", users=args.users, database_url=args.database_url).start()
            try:
                if "throughput" not in args.skip:
                    throughput = run_throughput(stack, options, cpus, print)
                    report["throughput"] = as_json(throughput)
                    print(throughput_section(throughput), flush=True)
                    summary.append(
                        f"  {verdict(throughput.passed)}  {throughput.accepted_per_second:,.0f} accepted/s"
                        f" (goal >= {ACCEPT_GOAL:,.0f}, no errors)"
                    )
                if "redis" not in args.skip:
                    redis = run_redis_benchmark(stack)
                    report["redis"] = as_json(redis) if redis else None
                    print("\n" + redis_section(redis), flush=True)
            finally:
                stack.close()
        if "latency" not in args.skip:
            print(f"\nPart 3: a fresh stack in {folder / 'latency'} ...", flush=True)
            stack = Stack(folder / "latency", users=args.users, database_url=args.database_url).start()
            try:
                latency = run_latency(stack, options, print)
            finally:
                stack.close()
            report["latency"] = as_json(latency)
            print(latency_section(latency), flush=True)
            summary.append(
                f"  {verdict(latency.passed)}  urgent accept→delivered p99 {latency.delivered_p99_ms:.0f} ms"
                f" (goal < {URGENT_GOAL_MS:.0f} ms, all delivered)"
            )
    except BenchError as exc:
        print(f"\nbench: FAILED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; processes stopped", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    print("\nSummary\n" + "\n".join(summary))
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
