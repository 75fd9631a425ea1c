"""Intake's CPU per intent in one process, without HTTP: where `Intake.accept` spends it.

    .venv/bin/python -m bench.intake_profile                 # 3,000 intents, cProfile top 30
    .venv/bin/python -m bench.intake_profile --no-profile    # CPU per intent only

A private Redis and a fresh SQLite database in a temporary folder, the shipped policies, users
and intents from the intake benchmark's mix (`bench/intake_bodies.py`), accepted by
`--concurrency` tasks as the API's handlers would (the intake's micro-batches then fill as
under load). Reported: the process's CPU per accepted intent over the accepting loop (with
cProfile, read the shares, not the speed).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.intake_bodies import intake_intents
from bench.intake_stack import make_users
from bench.procs import ROOT
from gateway.model import Intent, UserState
from gateway.redis_server import RedisServer
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import migrate


async def accept_all(
    folder: Path, intents: list[Intent], users: int, concurrency: int, profile: bool
) -> float:
    redis = RedisServer(folder / "redis").start()
    settings = Settings(
        policies_dir=ROOT / "policies",
        database_url=f"sqlite+aiosqlite:///{folder / 'notigate.db'}",
        redis_url=redis.url,
        redis_prefix="profile",
        provider_profile="dev",
    )
    services = Services(settings)
    try:
        await migrate.upgrade(services.database)
        await services.start()
        people = msgspec.convert(make_users(users), list[UserState])
        await services.recipients.put_users(people, services.clock())
        # The warm-up accepts the first tenth; the measured loop the rest, none of them seen
        # before (re-posting the warm-up's intents would measure replays and duplicates).
        queue = list(reversed(intents[: len(intents) // 10]))

        async def worker() -> None:
            while queue:
                await services.intake.accept(queue.pop(), producer="profile")

        await asyncio.gather(*(worker() for _ in range(concurrency // 4)))  # warm-up
        queue[:] = list(reversed(intents[len(intents) // 10 :]))
        measured = len(queue)
        # Thread CPU time, not wall time: on a shared machine wall time charges a function for
        # the moments the process was not running. The event loop's thread is what it sees.
        profiler = cProfile.Profile(time.thread_time) if profile else None
        threads = thread_cpu()
        batcher, commit = services.intake.batcher, services.intake.writer.commit
        before = (batcher.batches, batcher.items, commit.commits, commit.items)
        started = time.process_time()
        if profiler:
            profiler.enable()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        cpu = time.process_time() - started
        batches, items = batcher.batches - before[0], batcher.items - before[1]
        commits, stored = commit.commits - before[2], commit.items - before[3]
        print(
            f"decided in {batches:,} batches of {items / max(batches, 1):.1f} on average, "
            f"stored in {commits:,} commits of {stored / max(commits, 1):.1f} (urgent lanes apart)"
        )
        main_thread = thread_cpu()[threading.get_native_id()] - threads.get(threading.get_native_id(), 0.0)
        print(
            f"event loop thread: {main_thread / measured * 1e6:,.0f} µs per intent, "
            f"other threads (aiosqlite, ...): {(cpu - main_thread) / measured * 1e6:,.0f} µs"
        )
        return cpu / measured * 1e6
    finally:
        await services.close()
        redis.stop()


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each of this process's threads, by native id (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rpartition(")")[2].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--intents", type=int, default=3000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    intents = msgspec.convert(intake_intents(args.intents, args.users, seed=5), list[Intent])
    with tempfile.TemporaryDirectory(prefix="notigate-intake-profile-") as folder:
        cpu = asyncio.run(
            accept_all(Path(folder), intents, args.users, args.concurrency, not args.no_profile)
        )
    print(f"CPU per accepted intent: {cpu:,.0f} µs (process time over the measured loop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
