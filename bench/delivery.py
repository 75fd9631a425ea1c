"""Delivery benchmark: deliveries/s through one worker process to a local provider endpoint,
and the worker's CPU per delivery beside bare httpx and aiohttp POSTs to the same endpoint.

    .venv/bin/python -m bench.delivery                     # 5,000 deliveries per run (~1 minute)
    .venv/bin/python -m bench.delivery --profile           # plus where the worker's CPU goes

Goals (issue 11): one worker delivers at least 1,000 deliveries/s, and the gateway's own CPU
per delivery (the worker's CPU per delivery less the faster bare client's CPU per POST in
the same run: claim, render, adapter, outcome, job bookkeeping) is at most 500 µs. Writes
the figures to bench/results/latest-delivery.json. See bench/README.md for each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

if not __package__:  # run as a file: import `bench` and `gateway` from the project root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.delivery_profile import Breakdown
from bench.delivery_run import (
    BareRun,
    Endpoint,
    WorkerRun,
    as_json,
    endpoint,
    probe_startup,
    profile_breakdown,
    run_bare,
    run_worker,
    save_sample,
)
from bench.delivery_stack import DeliveryStack
from bench.procs import ROOT, BenchError, CpuPlan, pin_self, plan_cpus
from bench.report import CodeVersion, verdict

RATE_GOAL = 1000.0  # deliveries/s, one worker
OWN_CPU_GOAL = 500.0  # µs per delivery: worker CPU per delivery - the faster bare client's per POST
BARE_CLIENTS = ("httpx", "aiohttp")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=5000, help="deliveries per run (5,000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=50,
        help="sends in flight: the worker's NOTIGATE_WORKER_CONCURRENCY and the bare client's (50)",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=2.0, help="seconds an idle worker is watched (2)"
    )
    parser.add_argument(
        "--no-guard", action="store_true", help="skip the run with the provider's Redis guard"
    )
    parser.add_argument(
        "--no-dev", action="store_true", help="skip the run with the dev profile (files, no HTTP)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="one more run under cProfile: where the CPU goes"
    )
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 1 when the goal is missed")
    parser.add_argument("--keep", action="store_true", help="keep the stacks' folders (logs, databases)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "latest-delivery.json")
    return parser.parse_args(argv)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def worker_section(run: WorkerRun, bare: BareRun | None) -> str:
    ratio = (
        f"; {run.cpu_us_per_delivery - bare.cpu_us_per_post:,.0f} µs beyond the bare {bare.client} POST"
        if bare
        else ""
    )
    first = run.cpu_at_first_post_s
    return "\n".join(
        [
            f"  {run.label}: {run.deliveries:,} deliveries in {run.seconds:.2f} s = {run.per_second:,.0f}/s"
            f" (first POST to last stored; {run.from_spawn_seconds:.2f} s from the worker's start)",
            f"    worker CPU {run.cpu_us_per_delivery:,.0f} µs per delivery{ratio}"
            f"  [{run.total_cpu_s:.2f} s in all - {run.startup_cpu_s:.2f} s start-up;"
            f" CPU at the first POST {'n/a' if first is None else f'{first:.2f} s'}]",
            f"    less an idle worker's polling ({_pct(run.idle_cpu_share)} of a core meanwhile):"
            f" {run.net_cpu_us_per_delivery:,.0f} µs per delivery",
            f"    of which aiosqlite threads (SQLite) {run.other_threads_cpu_us_per_delivery:,.0f} µs;"
            f" Redis server {_us(run.redis_cpu_us_per_delivery)} µs per delivery",
            f"    send (adapter.send as the pipeline times it) p50 {_ms(run.send_p50_ms)} ms,"
            f" p99 {_ms(run.send_p99_ms)} ms; endpoint CPU {_pct(run.endpoint_cpu_share)};"
            f" other load {_pct(run.other_load)}",
        ]
    )


def fastest(bares: Sequence[BareRun]) -> BareRun:
    """The bare client that spent the least CPU per POST: the yardstick of the gateway's own CPU."""
    return min(bares, key=lambda b: b.cpu_us_per_post)


def bare_section(bare: BareRun) -> str:
    return (
        f"  bare {bare.client}: {bare.requests:,} POSTs of {bare.body_bytes:,} bytes"
        f" in {bare.seconds:.2f} s ="
        f" {bare.per_second:,.0f}/s; client CPU {bare.cpu_us_per_post:,.0f} µs per POST;"
        f" latency p50 {bare.p50_ms:.2f} ms, p99 {bare.p99_ms:.2f} ms; other load {_pct(bare.other_load)}"
    )


def profile_section(parts: Breakdown) -> str:
    rows = [f"    {part:<28} {100 * share:5.1f}%" for part, share in parts.shares().items()]
    return "\n".join(
        [f"Profile of the worker's event-loop thread ({parts.total:.2f} s of CPU under cProfile):", *rows]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    cpus = plan_cpus()
    version = CodeVersion.of_work_tree()
    layout = (
        f"worker and bare client on cpu {cpus.server}; endpoint, Redis and the bench on cpu {cpus.generator}"
        if cpus.server is not None and cpus.server != cpus.generator
        else cpus.note
    )
    print(f"Notigate delivery benchmark, code {version.describe()}; {layout}", flush=True)
    report: dict[str, Any] = {
        "code": {"commit": version.commit, "dirty": version.dirty},
        "options": {"deliveries": args.deliveries, "concurrency": args.concurrency},
        "cpus": layout,
    }
    folder = Path(tempfile.mkdtemp(prefix="notigate-delivery-bench-"))
    pin_self(cpus.generator)  # the bench's own polling stays off the measured core
    runs: list[WorkerRun] = []
    bares: list[list[BareRun]] = []  # per gateway run, one per client
    parts: Breakdown | None = None
    dev: WorkerRun | None = None
    try:
        with endpoint(cpus.generator, folder) as point:
            for label, guard in (("plain", False), ("guard", True)):
                if guard and args.no_guard:
                    continue
                run = _gateway_run(point, cpus, args, folder, label, guard=guard)
                runs.append(run)
                if not bares:
                    save_sample(point, folder)
                # Right after each worker run, so both see the same machine (a shared VM drifts).
                bares.append(_bare_runs(point, cpus, folder, args))
                print(
                    worker_section(run, fastest(bares[-1]))
                    + "\n"
                    + "\n".join(bare_section(b) for b in bares[-1]),
                    flush=True,
                )
            if not args.no_dev:
                dev = _gateway_run(point, cpus, args, folder, "dev", guard=False, dev=True)
                print(worker_section(dev, None), flush=True)
            if args.profile:
                parts = _profile_run(point, cpus, args, folder)
                print(profile_section(parts), flush=True)
    except BenchError as exc:
        print(f"\nbench: FAILED: {exc}", file=sys.stderr)
        print(f"  (logs kept in {folder})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; processes stopped", file=sys.stderr)
        return 130
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)

    plain, bare = runs[0], fastest(bares[0])
    own = plain.cpu_us_per_delivery - bare.cpu_us_per_post
    passed = own <= OWN_CPU_GOAL and plain.per_second >= RATE_GOAL
    summary = [
        f"  {verdict(plain.per_second >= RATE_GOAL)}  {plain.per_second:,.0f} deliveries/s"
        f" (goal >= {RATE_GOAL:,.0f}); the bare {bare.client} client: {bare.per_second:,.0f} POSTs/s",
        f"  {verdict(own <= OWN_CPU_GOAL)}  the gateway's own CPU per delivery {own:,.0f} µs"
        f" = worker {plain.cpu_us_per_delivery:,.0f} µs - bare {bare.client} {bare.cpu_us_per_post:,.0f} µs"
        f" per POST (goal <= {OWN_CPU_GOAL:,.0f} µs)",
    ]
    if dev is not None:
        summary.append(
            f"  {verdict(dev.per_second >= RATE_GOAL)}  the dev profile (.eml files, no HTTP):"
            f" {dev.per_second:,.0f} deliveries/s, worker CPU {dev.cpu_us_per_delivery:,.0f} µs per delivery"
        )
    if len(runs) > 1:
        guarded, bare2 = runs[1], fastest(bares[1])
        summary.append(
            f"        with the Redis guard: {guarded.per_second:,.0f} deliveries/s,"
            f" {guarded.cpu_us_per_delivery:,.0f} µs per delivery,"
            f" {guarded.cpu_us_per_delivery - bare2.cpu_us_per_post:,.0f} µs beyond its bare run's"
        )
    loads = [
        x for x in [*(r.other_load for r in runs), *(b.other_load for r in bares for b in r)] if x is not None
    ]
    if loads and max(loads) > 0.05:
        summary.append(
            f"  check: WARNING other processes used up to {max(loads):.0%} of the cores meanwhile;"
            " rerun on a quiet machine"
        )
    print("\nSummary\n" + "\n".join(summary))
    report["runs"] = [as_json(r) for r in [*runs, *([dev] if dev else [])]]
    report["bare"] = [as_json(b) for these in bares for b in these]
    report["profile"] = parts.as_dict() if parts else None
    report["summary"] = {
        "goal": f">= {RATE_GOAL:,.0f} deliveries/s; worker CPU per delivery - the faster bare client's"
        f" CPU per POST <= {OWN_CPU_GOAL:,.0f} µs",
        "per_second": round(plain.per_second, 1),
        "own_cpu_us_per_delivery": round(own, 1),
        "fastest_bare": bare.client,
        "load_average": os.getloadavg(),
        "dev_per_second": round(dev.per_second, 1) if dev else None,
        "dev_cpu_us_per_delivery": round(dev.cpu_us_per_delivery, 1) if dev else None,
        "pass": passed,
    }
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.output}")
    return 1 if args.fail_on_miss and not passed else 0


def _bare_runs(point: Endpoint, cpus: CpuPlan, folder: Path, args: argparse.Namespace) -> list[BareRun]:
    runs = []
    for client in BARE_CLIENTS:
        print(f"  bare {client} client, {args.deliveries:,} POSTs ...", flush=True)
        runs.append(
            run_bare(
                point, cpus, folder, requests=args.deliveries, concurrency=args.concurrency, client=client
            )
        )
    return runs


def _stack(
    point: Endpoint,
    cpus: CpuPlan,
    args: argparse.Namespace,
    folder: Path,
    label: str,
    *,
    guard: bool,
    dev: bool = False,
) -> DeliveryStack:
    return DeliveryStack(
        folder / label,
        deliveries=args.deliveries,
        endpoint_url=point.url,
        guard=guard,
        dev=dev,
        concurrency=args.concurrency,
        redis_cpu=cpus.generator,
    ).start()


def _gateway_run(
    point: Endpoint,
    cpus: CpuPlan,
    args: argparse.Namespace,
    folder: Path,
    label: str,
    *,
    guard: bool,
    dev: bool = False,
) -> WorkerRun:
    what = (
        "with the provider's rate limit and breaker (Redis guard)" if guard else "no rate limit, no breaker"
    )
    if dev:
        what = "the dev profile: every message written to the outbox folder, nothing posted"
    print(f"\n{label}: a stack with {args.deliveries:,} users, {what} ...", flush=True)
    stack = _stack(point, cpus, args, folder, label, guard=guard, dev=dev)
    try:
        startup, idle = probe_startup(stack, cpus.server, args.idle_seconds)
        stack.preload()
        print(f"  {args.deliveries:,} deliveries pending; one worker draining them ...", flush=True)
        return run_worker(stack, point, cpus, label=label, startup_cpu=startup, idle_share=idle)
    finally:
        stack.close()


def _profile_run(point: Endpoint, cpus: CpuPlan, args: argparse.Namespace, folder: Path) -> Breakdown:
    print(
        f"\nprofile: a fresh stack, the worker under cProfile ({args.deliveries:,} deliveries) ...",
        flush=True,
    )
    stack = _stack(point, cpus, args, folder, "profile", guard=False)
    target = folder / "worker.prof"
    try:
        stack.preload()
        run_worker(stack, point, cpus, label="profile", startup_cpu=0.0, idle_share=0.0, profile_to=target)
    finally:
        stack.close()
    return profile_breakdown(target, args.deliveries)


if __name__ == "__main__":
    sys.exit(main())
