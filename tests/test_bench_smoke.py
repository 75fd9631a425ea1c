"""Every benchmark runs to its end with tiny parameters and gets no error answer.

The benchmarks measure; the suite cannot (timings depend on the machine), so nothing here
asserts a figure. What it catches is a benchmark that no longer runs: a body the gateway
now refuses (the intake bench once sent one-time codes without the `minutes` their
templates need, and every urgent probe got 422), a route whose answer changed shape, a
command line that changed. Each bench runs as the lead runs it, a subprocess with its own
stack (private Redis, fresh SQLite), and writes its JSON report to tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.summary import rows_of
from tests.conftest import REPO

# The benches configure their stacks themselves; nothing of the caller's gateway settings leaks in.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("NOTIGATE_")}


def run_bench(module: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    """`python -m <module> ... --output tmp_path/<module>.json`; its report, once it exited 0."""
    output = tmp_path / f"{module}.json"
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--output", str(output)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, (
        f"{module} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    report: dict[str, Any] = json.loads(output.read_text())
    return report


def test_policy_bench_runs_both_parts(tmp_path: Path) -> None:
    """Both CEL runtimes' engine loop and the two HTTP servers, every request answered 200."""
    report = run_bench(
        "bench.policy",
        tmp_path,
        *("--cases", "100", "--engine-seconds", "0.2", "--bodies", "20", "--connections", "2"),
        *("--warmup", "1", "--duration", "1", "--rounds", "1"),
    )
    assert {e["runtime"] for e in report["engine"]} == {"cel-expr-python", "cel-python"}
    assert all(e["decisions"] > 0 for e in report["engine"])
    for endpoint in ("bare", "dry_run"):
        assert report["http"][endpoint]["requests"] > 0
        assert report["http"][endpoint]["errors"] == {}


def test_delivery_bench_drains_every_delivery(tmp_path: Path) -> None:
    """The worker sends each preloaded delivery once to the local endpoint (each bare client
    too), and once more under the dev profile, which writes files instead."""
    report = run_bench(
        "bench.delivery",
        tmp_path,
        "--deliveries",
        "40",
        "--concurrency",
        "5",
        "--idle-seconds",
        "0.2",
        "--no-guard",
    )
    plain, dev = report["runs"]
    assert plain["label"] == "plain" and plain["deliveries"] == plain["endpoint_posts"] == 40
    # The dev profile writes each message to the outbox folder and posts nothing.
    assert dev["label"] == "dev" and dev["deliveries"] == 40 and dev["endpoint_posts"] == 0
    assert [bare["client"] for bare in report["bare"]] == ["httpx", "aiohttp"]
    for bare in report["bare"]:
        assert bare["requests"] == bare["endpoint_posts"] == 40 and bare["failures"] == {}
    # bench/run_all.sh ends with bench.summary over the reports: it must read this one.
    verdicts = {figure: verdict for figure, _, _, verdict in rows_of(report)}
    assert verdicts.keys() >= {"one worker: deliveries/s", "dev profile: deliveries/s"}
    own = [verdict for figure, verdict in verdicts.items() if figure.startswith("own CPU per delivery")]
    assert len(own) == 1 and own[0] in {"PASS", "MISS"}


def test_intake_bench_runs_every_part(tmp_path: Path) -> None:
    """Throughput, redis, the quiet baseline, the bulk peak and the soak, each on its own stack:
    every intent accepted and stored, every bulk request accepted or shed (429), every urgent
    code delivered, no error answer anywhere."""
    report = run_bench(
        "bench.intake",
        tmp_path,
        *("--parts", "throughput", "redis", "baseline", "peak", "soak", "--shared-stack", "--users", "200"),
        *("--duration", "2", "--bare-seconds", "1", "--connections", "4", "--loadgen", "builtin"),
        *("--redis-requests", "5000"),
        *("--latency-seconds", "2", "--bulk-rate", "50", "--bulk-size", "10", "--probe-rate", "5"),
        *("--drain-timeout", "120", "--soak-rate", "20", "--soak-seconds", "2", "--sample-seconds", "1"),
    )
    assert report["error_answers"] == 0
    throughput = report["throughput"]
    assert throughput["answered"] > 0 and throughput["stored"] >= throughput["answered"]
    assert throughput["errors"] == {}
    assert report["redis"]["set_per_second"] > 0
    for part in ("baseline", "peak"):
        latency = report[part]
        assert latency["probes"] > 0 and latency["probe_errors"] == {}
        assert latency["delivered"] == latency["probes"] and latency["undelivered"] == 0
    peak = report["peak"]
    assert peak["bulk_errors"] == {} and peak["bulk_requests"] > 0
    assert peak["bulk_requests"] + peak["bulk_shed"] == peak["bulk_offered"]
    assert peak["bulk_intents"] == 10 * peak["bulk_requests"]
    soak = report["soak"]
    assert soak["sent"] > 0 and soak["accepted"] + soak["shed"] == soak["sent"] and soak["errors"] == {}
    assert soak["samples"] and all(sum(s["rss_mb"].values()) > 0 for s in soak["samples"])
    assert soak["urgent_undelivered"] == 0
    figures = [figure for figure, *_ in rows_of(report)]
    assert "accepted intents/s" in figures and "peak: urgent accept p99" in figures
    assert "soak rss_mb: first / last minute" in figures


def test_intake_profile_runs(tmp_path: Path) -> None:
    """The in-process intake profile accepts its intents and prints the CPU per intent."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.intake_profile", "--intents", "200", "--users", "100", "--no-profile"],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CPU per accepted intent:" in done.stdout
