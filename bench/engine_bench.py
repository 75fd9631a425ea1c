"""Part 1: `decide()` alone, on one core, over the realistic mix.

Only the call is timed: inputs are built and every case decided once beforehand (which
also warms the per-event rule cache and the zone cache, as a running server would be).
The loop runs whole passes over the mix until a minimum time has passed, so the weights
of the mix hold in the figures. GC stays enabled: a server pays for it too.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.procs import OtherLoad
from bench.profiling import Profile
from bench.stats import Latency
from bench.workload import Case
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.engine import decide

ENGINE_GOAL_PER_SECOND = 5_000


@dataclass(frozen=True, slots=True)
class EngineResult:
    runtime: str
    decisions: int
    seconds: float
    latency: Latency
    other_load: float | None = None

    @property
    def per_second(self) -> float:
        return self.decisions / self.seconds

    @property
    def passed(self) -> bool:
        return self.per_second >= ENGINE_GOAL_PER_SECOND

    def as_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "decisions": self.decisions,
            "seconds": round(self.seconds, 3),
            "decisions_per_second": round(self.per_second, 1),
            **self.latency.as_dict(),
            "other_load_percent": None if self.other_load is None else round(100 * self.other_load, 1),
            "goal_decisions_per_second": ENGINE_GOAL_PER_SECOND,
            "pass": self.passed,
        }


def time_engine(
    runtime: str, policy: CompiledPolicy, cases: Sequence[Case], min_seconds: float, cores: Sequence[int]
) -> EngineResult:
    """Time `decide()` over whole passes of `cases` until `min_seconds` have passed.

    Throughput is decisions over the loop's wall time (timer overhead included, so it errs
    low); percentiles come from the per-call samples. `cores` are the cores this process
    runs on, watched for other processes' load while timing.
    """
    calls = [(c.intent, c.user, c.now, c.history) for c in cases]
    samples = array("q")
    clock = time.perf_counter_ns
    gc.collect()
    other = OtherLoad(cores)
    cpu_start = time.process_time()
    start = clock()
    deadline = start + int(min_seconds * 1e9)
    while True:
        for intent, user, now, history in calls:
            before = clock()
            decide(intent, user, now, history, policy)
            samples.append(clock() - before)
        if clock() >= deadline:
            break
    elapsed = (clock() - start) / 1e9
    other_load = other.share(time.process_time() - cpu_start)
    return EngineResult(runtime, len(samples), elapsed, Latency.from_ns(samples), other_load)


def profile_engine(runtime: str, policy: CompiledPolicy, cases: Sequence[Case], passes: int = 2) -> Profile:
    """cProfile over `passes` passes of the mix, apart from the timing: where a decision's time goes."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(passes):
        for case in cases:
            decide(case.intent, case.user, case.now, case.history, policy)
    profiler.disable()
    subject = f"decide() with {runtime}, {passes * len(cases):,} decisions"
    return Profile.from_stats(subject, pstats.Stats(profiler, stream=io.StringIO()))
