"""Policy benchmark: `decide()` alone, then the dry-run endpoint over HTTP vs a bare endpoint.

    .venv/bin/python -m bench.policy            # both parts, both CEL runtimes (~1 minute)
    .venv/bin/python bench/policy.py --profile  # plus cProfile of decide()

Goals: >= 5,000 decisions/s on one core; dry-run >= 50% of the bare endpoint's requests/s.
Prints a report ending in a PASS/MISS summary and writes the same figures to
bench/results/latest-policy.json. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file: import `bench` and `gateway` from the project root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.runner import main

if __name__ == "__main__":
    sys.exit(main())
