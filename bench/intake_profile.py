"""Intake's CPU per intent in one process, without HTTP: where `Intake.accept` spends it.

    .venv/bin/python -m bench.intake_profile                 # 3,000 intents, cProfile top 30
    .venv/bin/python -m bench.intake_profile --no-profile    # CPU per intent only
    .venv/bin/python -m bench.intake_profile --no-profile --intents 12000 --rounds 5   # steadier

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
import statistics
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
from gateway.quota import QuotaSpec
from gateway.redis_server import RedisServer
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import migrate


async def accept_all(
    folder: Path, intents: list[Intent], users: int, concurrency: int, profile: bool, rounds: int
) -> list[float]:
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
        # The warm-up accepts the first tenth; each measured round a share of the rest, none of
        # them seen before (re-posting an intent would measure replays and duplicates).
        warm = len(intents) // 10
        await accept_round(services, intents[:warm], max(1, concurrency // 4))
        share = (len(intents) - warm) // rounds
        # Thread CPU time, not wall time: on a shared machine wall time charges a function for
        # the moments the process was not running. The event loop's thread is what it sees.
        profiler = cProfile.Profile(time.thread_time) if profile else None
        figures = []
        for n in range(rounds):
            part = intents[warm + n * share : warm + (n + 1) * share]
            figures.append(await measured_round(services, part, concurrency, profiler))
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return figures
    finally:
        await services.close()
        redis.stop()


# As `POST /v1/intents` does, each intent takes a token of its key's quota (one never spent).
QUOTA = QuotaSpec("profile", rate=1e9, burst=10**9, name="profile")


async def accept_round(services: Services, intents: list[Intent], concurrency: int) -> None:
    """`intents` accepted by `concurrency` tasks, as the API's handlers would."""
    queue = list(reversed(intents))

    async def worker() -> None:
        while queue:
            await services.intake.accept(queue.pop(), producer="profile", quota=QUOTA)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measured_round(
    services: Services, intents: list[Intent], concurrency: int, profiler: cProfile.Profile | None
) -> float:
    """One round: the process's CPU per accepted intent, with its split and batch sizes printed."""
    threads = thread_cpu()
    batcher, commit = services.intake.batcher, services.intake.writer.commit
    before = (batcher.batches, batcher.items, commit.commits, commit.items)
    started = time.process_time()
    if profiler:
        profiler.enable()
    await accept_round(services, intents, concurrency)
    if profiler:
        profiler.disable()
    cpu = (time.process_time() - started) / len(intents) * 1e6
    main = threading.get_native_id()
    loop_cpu = (thread_cpu()[main] - threads.get(main, 0.0)) / len(intents) * 1e6
    batches, items = batcher.batches - before[0], batcher.items - before[1]
    commits, stored = commit.commits - before[2], commit.items - before[3]
    print(
        f"round of {len(intents):,}: {cpu:,.0f} µs per intent (event loop thread {loop_cpu:,.0f}, "
        f"other threads {cpu - loop_cpu:,.0f}); decided in batches of {items / max(batches, 1):.1f}, "
        f"stored in commits of {stored / max(commits, 1):.1f} on average (urgent lanes apart)"
    )
    return cpu


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
    parser.add_argument("--rounds", type=int, default=1, help="measured rounds; the median is reported")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    intents = msgspec.convert(intake_intents(args.intents, args.users, seed=5), list[Intent])
    with tempfile.TemporaryDirectory(prefix="notigate-intake-profile-") as folder:
        figures = asyncio.run(
            accept_all(Path(folder), intents, args.users, args.concurrency, not args.no_profile, args.rounds)
        )
    print(
        f"CPU per accepted intent: {statistics.median(figures):,.0f} µs "
        f"(process time over the measured loop{', median of the rounds' if len(figures) > 1 else ''})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
