"""`notigate worker` under cProfile, for the delivery benchmark's `--profile`.

    python -m bench.delivery_profiled OUT.prof [worker options...]

The profiler's clock is the main thread's CPU time (`time.thread_time`), not wall time:
a worker waiting on the endpoint or on SQLite's thread is idle, and wall time would bill
that wait to whatever function was on the stack (the event loop's `select`). The libraries
the worker uses are imported before profiling starts, so start-up is mostly left out; the
policy and template compilation still runs inside the profile (the bench reports its share).
The stats are written when the worker shuts down (SIGTERM).
"""

from __future__ import annotations

import cProfile
import sys
import time


def main() -> int:
    target, *args = sys.argv[1:]
    import aiosqlite  # noqa: F401
    import arq  # noqa: F401
    import httpx  # noqa: F401
    import jinja2  # noqa: F401
    import sqlalchemy  # noqa: F401

    import gateway.cli
    import gateway.delivery.pipeline
    import gateway.providers.webhook
    import gateway.queue.worker
    import gateway.services
    import gateway.templating.render

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        return gateway.cli.main(["worker", *args])
    finally:
        profiler.disable()
        profiler.dump_stats(target)


if __name__ == "__main__":
    sys.exit(main())
