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
import pstats
import sys
import tempfile
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
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return (time.process_time() - started) / measured * 1e6
    finally:
        await services.close()
        redis.stop()


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
