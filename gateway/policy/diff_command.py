"""`notigate diff [BASE] [HEAD]`: find two bundles, build the corpus, print what changes.

BASE and HEAD are each a directory (a policy directory, or a folder holding `policies/`) or
a git revision (`origin/main`, a commit): a revision's bundle is read with `git archive`
into a temporary directory, so the work tree is never touched. BASE defaults to
`origin/main`, HEAD to the bundle in the work tree.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from gateway.errors import ConfigError
from gateway.policy.checker import CheckResult, check
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths
from gateway.policy.corpus import Sample, from_tests, from_traffic, generated
from gateway.policy.diagnostics import PolicyError
from gateway.policy.diff import compare
from gateway.policy.diff_render import FORMATS, breaches, parse_threshold, render

CORPORA = ("tests", "generated")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policies", dest="dir", type=Path, metavar="DIR", help="the work tree's policies")
    parser.add_argument("--templates", type=Path, metavar="DIR", help="its templates (DIR/../templates)")
    parser.add_argument("--providers", type=Path, metavar="FILE", help="its providers file")
    parser.add_argument("--runtime", help="CEL runtime (default: auto)")
    parser.add_argument("base", nargs="?", default="origin/main", help="revision or directory (origin/main)")
    parser.add_argument("head", nargs="?", help="git revision or directory (default: the work tree's bundle)")
    parser.add_argument(
        "--corpus", action="append", choices=CORPORA, help="which corpora to decide (default: both)"
    )
    parser.add_argument(
        "--from-store",
        type=float,
        metavar="DAYS",
        help="also decide the intents the store (DATABASE_URL) accepted in the last DAYS days",
    )
    parser.add_argument("--store-limit", type=int, default=20_000, help="at most this many (20000)")
    parser.add_argument("--samples", type=int, default=2000, help="generated intents (default 2000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated workload (default 1)")
    parser.add_argument("--per-day", type=float, help="intents a day the volumes are scaled to")
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.add_argument(
        "--fail-on",
        action="append",
        default=[],
        metavar="THRESHOLD",
        help="exit 1 when crossed: cost-up=PERCENT, urgent-changed, any-change (repeatable)",
    )


def run(args: argparse.Namespace, work_tree: BundlePaths, runtime: str, database_url: str) -> int:
    try:
        thresholds = [parse_threshold(raw) for raw in args.fail_on]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with bundle_at(args.base, work_tree) as base_paths, bundle_at(args.head, work_tree) as head_paths:
        before, old = _loaded(base_paths, runtime, args.base)
        after, new = _loaded(head_paths, runtime, args.head)
        samples = corpus(args, before, after)
        if args.from_store:
            samples += asyncio.run(stored(database_url, args.from_store, args.store_limit))
        report = compare(old, new, samples, per_day=args.per_day)
    report = msgspec.structs.replace(
        report, before=f"{args.base} ({old.version})", after=f"{args.head or 'work tree'} ({new.version})"
    )
    print(render(report, args.format))
    crossed = breaches(report, thresholds)
    for line in crossed:
        print(f"notigate diff: {line}", file=sys.stderr)
    return 1 if crossed else 0


def corpus(args: argparse.Namespace, before: CheckResult, after: CheckResult) -> list[Sample]:
    """HEAD's test cases (BASE's where HEAD has none), and a workload generated over what
    either bundle names (half over each, so events only one routes are sampled too)."""
    wanted = args.corpus or list(CORPORA)
    tests = from_tests(after.bundle) or from_tests(before.bundle)
    samples: list[Sample] = list(tests) if "tests" in wanted else []
    if "generated" in wanted:
        for policy in (before.policy, after.policy):
            if policy is not None:
                samples += generated(policy, args.samples // 2, seed=args.seed, seeds=tests)
    return samples


async def stored(database_url: str, days: float, limit: int) -> list[Sample]:
    """The last `days` of intents in the store, with their users as stored."""
    # Imported here: the store (SQLAlchemy, SQLModel, ~0.4 s) is for --from-store only, and
    # every `notigate` command imports this module to build its parser.
    from gateway.store.database import Database
    from gateway.store.recipients import SqlRecipients
    from gateway.store.traffic import recent_intents

    database = Database(database_url)
    try:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
        intents = await recent_intents(database, since, limit)
        users = await SqlRecipients(database).get_users(sorted({i.user_id for i, _ in intents}))
    finally:
        await database.dispose()
    return from_traffic(intents, users)


def _loaded(paths: BundlePaths, runtime: str, name: str | None) -> tuple[CheckResult, CompiledPolicy]:
    """The bundle compiled (its tests are `check`'s business, not the diff's)."""
    result = check(paths, runtime=runtime, run_tests=False)
    if result.policy is None:
        print(f"notigate diff: the bundle of {name or 'the work tree'} does not compile", file=sys.stderr)
        raise PolicyError(result.diagnostics)
    return result, result.policy


@contextmanager
def bundle_at(where: str | None, work_tree: BundlePaths) -> Iterator[BundlePaths]:
    """The bundle of a directory, of a git revision (extracted to a temporary directory), or
    the work tree's when `where` is None."""
    if where is None:
        yield work_tree
        return
    path = Path(where)
    if path.is_dir():
        policies = path / "policies" if (path / "policies").is_dir() else path
        yield BundlePaths.for_policies(policies, schemas=work_tree.schemas)
        return
    root = _git(work_tree.policies, "rev-parse", "--show-toplevel").decode().strip()
    parts = [work_tree.policies, work_tree.templates, work_tree.providers]
    relative = [str(p.resolve().relative_to(Path(root).resolve())) for p in parts]
    listed = _git(Path(root), "ls-tree", "-r", "--name-only", where, "--", *relative).decode().split()
    with tempfile.TemporaryDirectory(prefix="notigate-diff-") as tmp:
        if listed:
            archive = _git(Path(root), "archive", "--format=tar", where, "--", *listed)
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(tmp, filter="data")
        base = Path(tmp)
        yield BundlePaths(
            policies=base / relative[0],
            templates=base / relative[1],
            providers=base / relative[2],
            schemas=work_tree.schemas,
        )


def _git(cwd: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
            ["git", *args],  # noqa: S607 - git from PATH, as the user runs it
            cwd=cwd,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"git {args[0]} could not run: {exc}") from None
    if done.returncode != 0:
        raise ConfigError(f"git {' '.join(args[:3])}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
