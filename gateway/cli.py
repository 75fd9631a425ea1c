"""`notigate`: the command line. Each subcommand is a thin shell over the same functions the
server uses, so what `check`, `test` and `explain` say is what the gateway does.

Exit status: 0 on success, 1 when the command ran and found problems, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from gateway import __version__
from gateway.errors import ConfigError, NotigateError
from gateway.policy import diff_command
from gateway.policy.cel import RUNTIME_NAMES
from gateway.policy.compiler import BundlePaths
from gateway.policy.diagnostics import PolicyError
from gateway.redact import redact_http_logs
from gateway.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"notigate: {exc}", file=sys.stderr)
        return 2
    command: Command = args.command
    try:
        return command(args, settings)
    except PolicyError as exc:
        print("\n".join(d.format() for d in exc.diagnostics), file=sys.stderr)
        print(f"notigate: the policy bundle has {len(exc.diagnostics)} problem(s)", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"notigate: {exc}", file=sys.stderr)
        return 2
    except NotigateError as exc:  # e.g. the database is unreachable
        print(f"notigate: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notigate", description="Policy-driven notification gateway.")
    parser.add_argument("--version", action="version", version=f"notigate {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    check = sub.add_parser("check", help="validate a policy bundle and run its test suites")
    _bundle_args(check)
    check.add_argument("--no-tests", action="store_true", help="skip the policy test suites")
    check.add_argument("--json", action="store_true", help="print diagnostics as JSON (= --format json)")
    _report_args(check)
    check.add_argument("-v", "--verbose", action="store_true", help="also list every SMS template's segments")
    check.set_defaults(command=cmd_check)

    test = sub.add_parser("test", help="run the policy test suites, optionally with coverage")
    _bundle_args(test)
    test.add_argument(
        "-k", dest="select", metavar="TEXT", help="only cases whose suite or name contains TEXT"
    )
    test.add_argument("-v", "--verbose", action="store_true", help="list every case, not only failures")
    test.add_argument("--coverage", action="store_true", help="report rules and branches never exercised")
    test.add_argument("--min-coverage", type=float, metavar="N", help="fail below N percent coverage")
    test.add_argument(
        "--format", choices=("text", "github", "junit"), default="text", help="output for a terminal or CI"
    )
    test.set_defaults(command=cmd_test)

    diff = sub.add_parser("diff", help="decide the same intents under two bundles and report what changes")
    diff_command.add_arguments(diff)
    diff.set_defaults(command=cmd_diff)

    explain = sub.add_parser("explain", help="decide for an intent or a dry-run body and explain it")
    explain.add_argument(
        "file", metavar="FILE", help="JSON file with an intent or {intent, user, at, history}; - for stdin"
    )
    explain.add_argument("--at", metavar="TIME", help="decide at this RFC 3339 time instead of now")
    explain.add_argument("--json", action="store_true", help="print the contract's Decision JSON")
    explain.add_argument("--no-trace", action="store_true", help="leave the trace out of the readable output")
    explain.add_argument(
        "--policies", type=Path, metavar="DIR", help="policy directory (default: NOTIGATE_POLICIES)"
    )
    explain.add_argument("--runtime", choices=("auto", *RUNTIME_NAMES), help="CEL runtime")
    explain.add_argument(
        "--api",
        metavar="URL",
        help="ask a running gateway's POST /v1/dry-run (its policy, users and history), with the "
        "key in NOTIGATE_API_KEY",
    )
    explain.set_defaults(command=cmd_explain)

    serve = sub.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", help="interface to bind (default: NOTIGATE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: NOTIGATE_PORT or 8080)")
    serve.add_argument("--policies", type=Path, metavar="DIR", help="policy directory")
    serve.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="processes sharing the port, one core each (default: NOTIGATE_API_PROCESSES or 1)",
    )
    serve.set_defaults(command=cmd_serve)

    worker = sub.add_parser("worker", help="deliver queued jobs (and relay the outbox)")
    worker.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="QUEUE",
        help="serve only this queue (repeatable; default: every tier's queue)",
    )
    worker.add_argument("--no-relay", action="store_true", help="leave the outbox relay to another worker")
    worker.add_argument(
        "--nice",
        type=int,
        default=0,
        metavar="N",
        help="lower this process's CPU priority by N (e.g. 10 for the bulk queue's worker, so a "
        "campaign yields the cores to intake and the critical queue)",
    )
    worker.set_defaults(command=cmd_worker)

    database = sub.add_parser("db", help="the store's schema")
    database_sub = database.add_subparsers(metavar="ACTION", required=True)
    upgrade = database_sub.add_parser("upgrade", help="apply migrations (default: to the newest)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(command=cmd_db_upgrade)
    current = database_sub.add_parser("current", help="print the schema revision")
    current.set_defaults(command=cmd_db_current)

    keys = sub.add_parser("keys", help="producer API keys")
    keys_sub = keys.add_subparsers(metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name")
    create.add_argument(
        "--events",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="event patterns the key may send, e.g. 'order.*'",
    )
    create.add_argument("--admin", action="store_true", help="may manage users, preferences and dead letters")
    create.add_argument("--rate", type=float, default=100.0, help="intents per second (default 100)")
    create.add_argument("--burst", type=int, default=200, help="burst allowance (default 200)")
    create.set_defaults(command=cmd_keys_create)
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    listing.set_defaults(command=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by name or id")
    revoke.add_argument("name")
    revoke.set_defaults(command=cmd_keys_revoke)

    people = sub.add_parser("users", help="recipients in the store")
    people_sub = people.add_subparsers(metavar="ACTION", required=True)
    importing = people_sub.add_parser(
        "import", help="create or replace users from JSON Lines (one user per line, as PUT /v1/users/{id})"
    )
    importing.add_argument("file", metavar="FILE", help="a .jsonl file, or - for standard input")
    importing.set_defaults(command=cmd_users_import)

    dev = sub.add_parser("dev", help="run Redis, the API and the worker for local development (./dev run)")
    dev.add_argument(
        "--var", type=Path, default=Path("var"), help="where its database, Redis, key and outbox live (var/)"
    )
    dev.set_defaults(command=cmd_dev)
    return parser


def _bundle_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir", nargs="?", type=Path, metavar="DIR", help="policy directory (default: policies)"
    )
    parser.add_argument(
        "--templates", type=Path, metavar="DIR", help="templates directory (default: DIR/../templates)"
    )
    parser.add_argument(
        "--providers", type=Path, metavar="FILE", help="providers file (default: DIR/../providers.yaml)"
    )
    parser.add_argument("--runtime", choices=("auto", *RUNTIME_NAMES), help="CEL runtime (default: auto)")


def _paths(args: argparse.Namespace, settings: Settings) -> BundlePaths:
    policies = args.dir or settings.policies_dir
    return BundlePaths.for_policies(
        policies,
        templates=args.templates or settings.templates_dir,
        providers=args.providers or settings.providers_file,
        schemas=settings.schemas_dir,
    )


def _report_args(parser: argparse.ArgumentParser) -> None:
    from gateway.policy.reports import REPORT_FORMATS

    parser.add_argument(
        "--format",
        choices=REPORT_FORMATS,
        default="text",
        help="text for a terminal; json; github (workflow annotations); junit (XML test report)",
    )
    parser.add_argument(
        "--min-coverage", type=float, metavar="N", help="fail (exit 3) below N percent rule/branch coverage"
    )


# `check`'s exit status tells CI why: the bundle cannot go live, or only its tests fail.
CHECK_EXIT = {"ok": 0, "invalid": 1, "tests-failed": 3}


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.policy.checker import check
    from gateway.policy.reports import github_annotations, junit_xml

    started = time.perf_counter()
    result = check(
        _paths(args, settings),
        runtime=args.runtime or settings.cel_runtime,
        run_tests=not args.no_tests,
        min_coverage=args.min_coverage,
    )
    status = CHECK_EXIT[result.status]
    output = "json" if args.json else args.format
    if output == "json":
        report = {
            "ok": result.ok,
            "status": result.status,
            "diagnostics": result.diagnostics,
            "notes": result.notes,
            "coverage": result.coverage,
        }
        print(msgspec.json.encode(report).decode())
        return status
    notes = [n for n in result.notes if args.verbose or not n.message.startswith("1 segment (GSM-7")]
    if output == "github":
        print("\n".join(github_annotations(result.diagnostics, notes)))
        return status
    if output == "junit":
        print(junit_xml(result.diagnostics, result.suites))
        return status
    for diagnostic in result.diagnostics:
        print(diagnostic.format())
    # An SMS of more than one segment, or in UCS-2, costs more than it seems: always shown.
    for note in notes:
        print(note.format().replace(f": {note.code}: ", f": note: {note.code}: ", 1))
    elapsed = time.perf_counter() - started
    if result.ok and result.policy is not None:
        cases = len(result.suites.results) if result.suites else 0
        print(
            f"ok: {len(result.policy.rules)} rules in {len(result.policy.files)} files, "
            f"{cases} test cases passed, {len(result.policy.messages.all())} templates rendered, "
            + (f"coverage {result.coverage:.1f}%, " if args.min_coverage is not None else "")
            + f"policy {result.policy.version} ({elapsed:.2f}s, {result.policy.runtime})"
        )
        return 0
    count = len(result.diagnostics)
    print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
    if result.suites is not None and result.suites.skipped:
        print(
            f"{len(result.suites.skipped)} test cases not run until a file they depend on is fixed",
            file=sys.stderr,
        )
    return status


def cmd_diff(args: argparse.Namespace, settings: Settings) -> int:
    paths = _paths(args, settings)
    return diff_command.run(args, paths, args.runtime or settings.cel_runtime, settings.database_url)


def cmd_test(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.policy.checker import check
    from gateway.policy.explain import render_decision
    from gateway.policy.suites import coverage_items, coverage_percent, run_case

    result = check(_paths(args, settings), runtime=args.runtime or settings.cel_runtime, run_tests=False)
    if result.policy is None:
        for diagnostic in result.diagnostics:
            print(diagnostic.format())
        print("the bundle does not compile; fix the problems above first", file=sys.stderr)
        return 1
    from gateway.policy.suites import SuiteReport, coverage_keys, load_cases

    started = time.perf_counter()
    report = SuiteReport()
    text = args.format == "text"
    for doc in result.bundle.suites:
        cases, problems = load_cases(doc)
        report.diagnostics += problems
        for case in cases:
            if args.select and args.select not in f"{case.suite} {case.name}":
                continue
            outcome = run_case(case, result.policy)
            report.results.append(outcome)
            report.covered |= coverage_keys(outcome.trace)
            if not text:
                continue
            if not outcome.passed:
                print(f"FAIL {case.suite}: {case.name}  ({case.origin.format()})")
                for problem in outcome.problems:
                    print(f"  {problem}")
                if outcome.decision is not None:
                    print("  got:")
                    print("    " + render_decision(outcome.decision).replace("\n", "\n    "))
            elif args.verbose:
                print(f"pass {case.suite}: {case.name}")
    if not text:
        return _print_test_report(args, report, coverage_items(result.policy))
    for diagnostic in report.diagnostics:
        print(diagnostic.format())
    failed = len(report.failures) + len(report.diagnostics)
    passed = len(report.results) - len(report.failures)
    print(
        f"{passed} passed, {failed} failed in {time.perf_counter() - started:.2f}s "
        f"(policy {result.policy.version}, {result.policy.runtime})"
    )
    status = 0 if failed == 0 else 1
    if args.coverage or args.min_coverage is not None:
        items = coverage_items(result.policy)
        percent = coverage_percent(items, report.covered)
        missed = [item for item in items if item.key not in report.covered]
        print(
            f"coverage: {len(items) - len(missed)}/{len(items)} rules and branches exercised ({percent:.1f}%)"
        )
        if args.coverage:
            for item in missed:
                print(f"  {item.origin.format()}: never exercised: {item.description}")
        if args.min_coverage is not None and percent < args.min_coverage:
            print(f"coverage {percent:.1f}% is below the required {args.min_coverage:g}%", file=sys.stderr)
            status = 1
    return status


def _print_test_report(args: argparse.Namespace, report: Any, items: Any) -> int:
    """`test --format github|junit`: the same cases and coverage gate, in a CI's shape."""
    from gateway.policy.diagnostics import Diagnostic
    from gateway.policy.reports import github_annotations, junit_xml
    from gateway.policy.suites import coverage_percent, failure_diagnostics

    problems = failure_diagnostics(report)
    percent = coverage_percent(items, report.covered)
    if args.min_coverage is not None and percent < args.min_coverage:
        message = f"coverage {percent:.1f}% is below the required {args.min_coverage:g}%"
        problems.append(Diagnostic.of_whole(args.dir or Path("policies"), "coverage-below", message))
    if args.format == "github":
        print("\n".join(github_annotations(sorted(problems))))
    else:
        print(junit_xml(sorted(problems), report))
    return 1 if problems else 0


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.model import AwareDatetime, DryRunRequest, Intent
    from gateway.policy.checker import load_policy
    from gateway.policy.explain import render_decision

    raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        body = msgspec.json.decode(raw)
        if not isinstance(body, dict):
            raise msgspec.ValidationError("expected a JSON object - at `$`")
        if "intent" in body:
            request = msgspec.convert(body, DryRunRequest)
        else:
            request = DryRunRequest(intent=msgspec.convert(body, Intent))
        if args.at:
            request = msgspec.structs.replace(
                request, at=msgspec.convert(args.at, AwareDatetime, strict=False)
            )
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"notigate explain: {args.file}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.api:
            decision = _explain_remotely(args.api, request)
        else:
            policies = args.policies or settings.policies_dir
            paths = BundlePaths.for_policies(
                policies,
                templates=settings.templates_dir,
                providers=settings.providers_file,
                schemas=settings.schemas_dir,
            )
            policy = load_policy(paths, runtime=args.runtime or settings.cel_runtime)
            decision = asyncio.run(_explain_locally(request, policy, settings))
    except NotigateError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"notigate explain: {exc.code}{where}: {exc.message}", file=sys.stderr)
        return 1
    if decision.trace and decision.trace[0].step == "user":
        stores = "" if args.api or "DATABASE_URL" in os.environ else " (DATABASE_URL is not set)"
        print(
            f"notigate explain: {decision.user_id!r} is not stored{stores}: {decision.trace[0].detail}",
            file=sys.stderr,
        )
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(decision), indent=2).decode())
    else:
        print(render_decision(decision, trace=not args.no_trace))
    return 0


async def _explain_locally(request: Any, policy: Any, settings: Settings) -> Any:
    """Decide as intake would: stored users when DATABASE_URL is set, history when REDIS_URL is.

    Without them the user must be in the request; an id nothing stores is decided for as
    intake decides for it (a recipient with nothing on file), and the trace says so.
    """
    from gateway.decisions import dry_run
    from gateway.recipients import NoStoredState

    nothing = NoStoredState()
    if "DATABASE_URL" not in os.environ and "REDIS_URL" not in os.environ:
        return await dry_run(request, policy, nothing, nothing)
    from gateway.services import Services

    services = Services(settings, policy=policy)
    try:
        users = services.recipients if "DATABASE_URL" in os.environ else nothing
        history = services.history if "REDIS_URL" in os.environ else nothing
        return await dry_run(request, policy, users, history)
    finally:
        await services.redis.aclose()
        await services.database.dispose()


def _explain_remotely(api: str, request: Any) -> Any:
    """A running gateway's own dry run: its policy version, its users, its history."""
    import httpx

    from gateway.errors import ClientError, Unavailable
    from gateway.model import Decision

    key = os.environ.get("NOTIGATE_API_KEY")
    if not key:
        raise ClientError("set NOTIGATE_API_KEY to a key of the gateway at --api", code="missing_api_key")
    url = api.rstrip("/") + "/v1/dry-run"
    try:
        response = httpx.post(
            url,
            content=msgspec.json.encode(request),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
            timeout=10.0,
        )
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot reach {url}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        try:
            error = msgspec.json.decode(response.content).get("error") or {}
        except (msgspec.DecodeError, AttributeError):
            error = {}
        raise ClientError(
            f"{url} answered {response.status_code}: {error.get('message', response.text[:200])}",
            field=error.get("field"),
            code=error.get("code", "remote_error"),
        )
    return msgspec.json.decode(response.content, type=Decision)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from gateway.api.app import create_app

    if args.policies:
        settings = msgspec.structs.replace(settings, policies_dir=args.policies)
    host = args.host or settings.host
    port = args.port or settings.port
    processes = args.processes or settings.api_processes
    if processes < 1:
        print("notigate serve: --processes must be at least 1", file=sys.stderr)
        return 2
    configure_logging(settings)
    app = create_app(settings, live=True)  # raises PolicyError on a bundle the checker rejects
    logging.getLogger("gateway.api").info(
        "serving the API on http://%s:%d with %d process(es); %s", host, port, processes, settings.describe()
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": settings.log_level.lower(),
        # Open inbox streams would hold a stop forever: after 5 s they are closed (browsers'
        # EventSource reconnects by itself) and the shutdown goes on.
        "timeout_graceful_shutdown": 5,
    }
    if processes == 1:
        uvicorn.run(app, access_log=False, **options)
        return 0
    # Each process builds its own app (its own connections) from the environment.
    os.environ["NOTIGATE_POLICIES"] = str(settings.policies_dir)
    uvicorn.run("gateway.api.app:app_from_env", factory=True, workers=processes, access_log=False, **options)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.queue import worker

    configure_logging(settings)
    if args.nice:
        os.nice(args.nice)
    return worker.run(settings, args.queues, relay=not args.no_relay)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.store import migrate
    from gateway.store.database import Database

    async def upgrade() -> str | None:
        database = Database(settings.database_url)
        try:
            await migrate.upgrade(database, args.revision)
            return await migrate.current(database)
        finally:
            await database.dispose()

    print(f"database at revision {asyncio.run(upgrade())}")
    return 0


def cmd_db_current(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.store import migrate
    from gateway.store.database import Database

    async def current() -> str | None:
        database = Database(settings.database_url)
        try:
            return await migrate.current(database)
        finally:
            await database.dispose()

    revision = asyncio.run(current())
    head = migrate.head()
    print(f"{revision or 'empty'} (newest: {head})")
    return 0 if revision == head else 1


def _with_database(settings: Settings, action: Callable[[Any], Any], who: str) -> Any:
    """Run `action(database)` on a schema this code can use, or raise what to do about it."""
    from gateway.store import migrate
    from gateway.store.database import Database

    async def run() -> Any:
        database = Database(settings.database_url)
        try:
            await migrate.require_current(database, who)
            return await action(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def _with_keys(settings: Settings, action: Callable[[Any], Any]) -> Any:
    from gateway.store.keys import ApiKeyStore

    return _with_database(settings, lambda database: action(ApiKeyStore(database)), "`notigate keys`")


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.decisions import utcnow
    from gateway.model import EventPattern

    for pattern in args.events:
        try:
            msgspec.convert(pattern, EventPattern)
        except msgspec.ValidationError:
            print(
                f"notigate keys create: {pattern!r} is not an event pattern (e.g. order.shipped, order.*, *)",
                file=sys.stderr,
            )
            return 2
    try:
        key, token = _with_keys(
            settings,
            lambda store: store.create(
                args.name, args.events, admin=args.admin, rate=args.rate, burst=args.burst, now=utcnow()
            ),
        )
    except NotigateError as exc:
        print(f"notigate keys create: {exc.message}", file=sys.stderr)
        return 1
    scope = ", ".join(key.events) or "no events"
    print(
        f"created key {key.name!r} ({key.id}) for {scope}{'; admin' if key.admin else ''}; "
        f"{key.rate:g}/s, burst {key.burst}",
        file=sys.stderr,
    )
    print("the key (shown only now; keep it secret):", file=sys.stderr)
    print(token)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = _with_keys(settings, lambda store: store.list())
    for key in keys:
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        print(
            f"{key.name:<20} {key.id}  {state:<18} {'admin ' if key.admin else ''}"
            f"{', '.join(key.events) or '-'}  {key.rate:g}/s burst {key.burst}"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.decisions import utcnow

    if _with_keys(settings, lambda store: store.revoke(args.name, utcnow())):
        print(f"revoked {args.name}")
        return 0
    print(f"notigate keys revoke: no active key {args.name!r}", file=sys.stderr)
    return 1


IMPORT_CHUNK = 1000


def cmd_users_import(args: argparse.Namespace, settings: Settings) -> int:
    """Every line is checked before anything is written: a bad file changes nothing."""
    from gateway.decisions import utcnow
    from gateway.model import UserState, token_problem
    from gateway.store.recipients import SqlRecipients

    name = "<stdin>" if args.file == "-" else args.file
    try:
        lines = (
            sys.stdin.read().splitlines() if args.file == "-" else Path(args.file).read_text().splitlines()
        )
    except OSError as exc:
        print(f"notigate users import: cannot read {name}: {exc.strerror}", file=sys.stderr)
        return 2
    decode = msgspec.json.Decoder(UserState).decode
    batch: list[UserState] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            user = decode(line)
        except (msgspec.DecodeError, ValueError) as exc:  # bad JSON, a bad field, an unknown zone
            print(f"{name}:{number}: {exc}", file=sys.stderr)
            return 2
        for i, device in enumerate(user.contacts.devices):
            if (problem := token_problem(device)) is not None:
                print(f"{name}:{number}: contacts.devices[{i}].token: {problem}", file=sys.stderr)
                return 2
        batch.append(user)

    async def store(database: Any) -> int:
        recipients = SqlRecipients(database)
        created = 0
        for start in range(0, len(batch), IMPORT_CHUNK):
            created += await recipients.put_users(batch[start : start + IMPORT_CHUNK], utcnow())
        return created

    try:
        created = _with_database(settings, store, "`notigate users import`")
    except NotigateError as exc:
        print(f"notigate users import: {exc.message}", file=sys.stderr)
        return 1
    print(f"imported {len(batch)} users from {name}: {created} new, {len(batch) - created} replaced")
    return 0


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_http_logs()


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from gateway import devserver
    from gateway.policy.checker import load_policy

    load_policy(settings.bundle_paths(), runtime=settings.cel_runtime)  # refuse early, with every problem
    return devserver.run(settings, args.var)


if __name__ == "__main__":
    sys.exit(main())
