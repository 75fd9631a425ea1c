"""The benchmark's command line: build the mix, run both parts, print and save the report.

`bench/policy.py` is the entry point (`python -m bench.policy` or `python bench/policy.py`);
this module holds the logic so that entry point can stay a few lines.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench import report as text
from bench.engine_bench import profile_engine, time_engine
from bench.generators import TOOLS
from bench.http_bench import HttpSettings, run_http
from bench.procs import ROOT, BenchError, CpuPlan, pin_self, plan_cpus
from bench.workload import Case, build_cases, bundle_cases, profile_mix
from gateway.policy.cel import RUNTIME_NAMES
from gateway.policy.checker import load_policy
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths

DEFAULT_OUTPUT = ROOT / "bench" / "results" / "latest-policy.json"
DESCRIPTION = """\
Part 1 times gateway.policy.engine.decide() alone on one core over a realistic mix of
intents, per CEL runtime. Part 2 serves POST /v1/dry-run and a bare Litestar endpoint with
uvicorn on 127.0.0.1 and drives both with the same load generator (wrk, else bench.loadgen).

Goals: >= 5,000 decisions/s on one core; dry-run >= 50% of the bare endpoint's requests/s.
The report ends in a PASS/MISS summary; the same figures go to bench/results/latest-policy.json.
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.policy",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mix = parser.add_argument_group("workload")
    mix.add_argument("--cases", type=int, default=2000, help="distinct decide() inputs (default 2000)")
    mix.add_argument("--seed", type=int, default=1, help="seed of the mix (default 1)")
    mix.add_argument(
        "--mix",
        choices=("shipped", "bundle"),
        default="shipped",
        help="shipped: the weighted mix written for policies/ (default); bundle: notigate diff's "
        "generated workload over whatever the bundle routes (gateway/policy/corpus.py)",
    )
    engine = parser.add_argument_group("part 1: engine")
    engine.add_argument(
        "--runtime",
        choices=[*RUNTIME_NAMES, "both"],
        default="both",
        help="CEL runtime(s) to time decide() with (default both)",
    )
    engine.add_argument("--engine-seconds", type=float, default=5.0, help="minimum timed seconds per runtime")
    engine.add_argument("--skip-engine", action="store_true")
    http = parser.add_argument_group("part 2: HTTP")
    http.add_argument("--loadgen", choices=["auto", *TOOLS], default="auto", help="auto: wrk if on PATH")
    http.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="measured seconds per endpoint, over all rounds (default 10)",
    )
    http.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per endpoint (default 2)")
    http.add_argument("--rounds", type=int, default=5, help="alternating bare/dry-run rounds (default 5)")
    http.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    http.add_argument("--bodies", type=int, default=500, help="distinct request bodies, from the mix")
    http.add_argument(
        "--http-runtime", choices=RUNTIME_NAMES, default=RUNTIME_NAMES[0], help="server's CEL runtime"
    )
    http.add_argument("--skip-http", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile decide() and a dry-run server under load; print the top 25 functions",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration / args.rounds < 1 or args.warmup < 1:
        parser.error("--warmup and --duration/--rounds must be at least 1 second (wrk counts whole seconds)")
    return args


@functools.cache
def load(runtime: str) -> CompiledPolicy:
    """The shipped bundle through the checker, as the server loads it; once per runtime."""
    return load_policy(BundlePaths.for_policies(ROOT / "policies"), runtime=runtime)


def run_engine(args: argparse.Namespace, cases: Sequence[Case], report: text.Report, cpus: CpuPlan) -> None:
    runtimes = RUNTIME_NAMES if args.runtime == "both" else (args.runtime,)
    for runtime in runtimes:
        policy = load(runtime)
        profile_mix(cases, policy)  # warm-up pass, untimed
        print(f"  {runtime}: timing decide() for at least {args.engine_seconds:g}s ...", flush=True)
        report.engine.append(time_engine(runtime, policy, cases, args.engine_seconds, cpus.engine_cores()))
        if args.profile:
            report.profiles.append(profile_engine(runtime, policy, cases))
    print()
    print(text.engine_section(report.engine))
    for profile in report.profiles:
        print()
        print(text.profile_section(profile))


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the `finally` blocks stop the servers."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _stop_on_sigterm()
    cpus = plan_cpus()
    pin_self(cpus.engine)
    reference = load(RUNTIME_NAMES[0])
    if args.mix == "shipped":
        cases = build_cases(args.cases, args.seed)
    else:
        cases = bundle_cases(reference, args.cases, args.seed)
    report = text.Report(reference.version, cpus, profile_mix(cases, reference))
    print(text.header(report))
    print()
    print(text.mix_section(report.mix))
    try:
        if not args.skip_engine:
            print()
            run_engine(args, cases, report, cpus)
        if not args.skip_http:
            print("\nPart 2: starting servers ...", flush=True)
            pin_self(cpus.generator)  # the bench itself stays off the server's core
            settings = HttpSettings(
                loadgen=args.loadgen,
                connections=args.connections,
                duration=args.duration,
                warmup=args.warmup,
                rounds=args.rounds,
                bodies=min(args.bodies, len(cases)),
                runtime=args.http_runtime,
                profile=args.profile,
            )
            report.http = run_http(cases, settings, cpus)
            print()
            print(text.http_section(report.http))
            if report.http.profile:
                print()
                print(text.profile_section(report.http.profile))
    except BenchError as exc:
        print(f"\nbench: FAILED: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; servers stopped", file=sys.stderr)
        return 130
    print()
    print(text.summary_section(report))
    report.write_json(args.output)
    print(f"\nwrote {args.output}")
    return 1 if args.fail_on_miss and not report.all_passed else 0
