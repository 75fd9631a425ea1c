"""Live reload: the policy bundle in force, and the reloads that may replace it.

A process serves one compiled bundle at a time (`LiveBundle.policy`). A change to the
policy, template or provider files (seen by watchfiles) or a SIGHUP starts a reload: the
bundle is checked by `gateway.policy.checker.check()` — the very gate `notigate check` and
start-up use, tests included — on a worker thread, so the event loop keeps serving while
CEL compiles. A bundle that passes replaces the old one with one reference assignment:
a request, a batch of intents or a delivery reads the policy once and is decided under
that version throughout, and every notification stores the version it was decided under.
A bundle that fails is refused: its diagnostics are logged, the refusal is counted
(`notigate_policy_reloads{outcome="refused"}`) and the last good bundle keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import msgspec
import watchfiles

from gateway import metrics
from gateway.decisions import utcnow
from gateway.policy.checker import CheckResult, check
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths
from gateway.policy.version import policy_version
from gateway.settings import ReloadMode

log = logging.getLogger("gateway.reload")

ReloadOutcome = Literal["loaded", "unchanged", "refused"]
DEBOUNCE_MS = 300  # a `git pull` or a volume update writes many files: one reload for them all
MAX_LOGGED = 20  # diagnostics logged for a refused bundle; the count says how many more


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """The last bundle a reload refused, and why (every diagnostic, as `file:line:col: code: message`)."""

    version: str
    at: dt.datetime
    diagnostics: list[str]


class ReloadStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What `GET /v1/policy` says about reloads in this process."""

    loaded_at: dt.datetime  # when the version in force was loaded (start-up or a reload)
    last_reload_at: dt.datetime | None  # the last reload attempted, whatever its outcome
    last_outcome: ReloadOutcome | None
    last_refused: Refusal | None
    watching: ReloadMode


Listener = Callable[[CompiledPolicy, CompiledPolicy], None]  # (old, new), called on the loop
# (old, new) -> what to do at the swap, or None; raises ReloadRefused if `new` cannot be served.
Preparer = Callable[[CompiledPolicy, CompiledPolicy], Awaitable[Callable[[], None] | None]]


class ReloadRefused(Exception):
    """A part of the process cannot serve the new bundle (a provider without its credentials)."""


class LiveBundle:
    """The compiled bundle in force; `reload()` replaces it only with one that passes check."""

    def __init__(
        self,
        policy: CompiledPolicy,
        paths: Callable[[], BundlePaths],
        *,
        runtime: str = "auto",
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.policy = policy
        self.paths = paths
        self.runtime = runtime
        self.clock = clock
        self.listeners: list[Listener] = []
        self.preparers: list[Preparer] = []
        self.loaded_at = clock()
        self.last_reload_at: dt.datetime | None = None
        self.last_outcome: ReloadOutcome | None = None
        self.last_refused: Refusal | None = None
        self.watching: ReloadMode = "off"
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._signals: list[signal.Signals] = []
        metrics.set_policy_loaded(policy.version, self.loaded_at)

    def current(self) -> CompiledPolicy:
        return self.policy

    def status(self) -> ReloadStatus:
        return ReloadStatus(
            loaded_at=self.loaded_at,
            last_reload_at=self.last_reload_at,
            last_outcome=self.last_outcome,
            last_refused=self.last_refused,
            watching=self.watching,
        )

    async def reload(self, reason: str) -> ReloadOutcome:
        """Check the bundle on disk off the event loop; swap it in if it passes, else keep ours.

        Reloads never overlap: one asked for while another runs waits for it, then reads the
        files again, so the last change always gets a reload of its own.
        """
        async with self._lock:
            paths = self.paths()
            result = await asyncio.to_thread(check, paths, runtime=self.runtime)
            self.last_reload_at = self.clock()
            outcome = await self._judge(result, paths, reason)
            self.last_outcome = outcome
            metrics.POLICY_RELOADS.labels(outcome).inc()
            return outcome

    async def _judge(self, result: CheckResult, paths: BundlePaths, reason: str) -> ReloadOutcome:
        new = result.policy if result.ok else None
        if new is None:
            version = await asyncio.to_thread(_version_of, paths)
            problems = [d.format() for d in result.diagnostics] or ["the bundle did not compile"]
            return self._refuse(version, problems, reason)
        if new.version == self.policy.version:
            log.info("policy reload (%s): bundle %s unchanged", reason, new.version)
            return "unchanged"
        commits, problems = await self._prepare(new)
        if problems:
            return self._refuse(new.version, problems, reason)
        return self._swap(new, commits, reason)

    async def _prepare(self, new: CompiledPolicy) -> tuple[list[Callable[[], None]], list[str]]:
        """Let each part of the process ready itself for `new`; one that cannot refuses it."""
        commits: list[Callable[[], None]] = []
        for prepare in self.preparers:
            try:
                commit = await prepare(self.policy, new)
            except ReloadRefused as exc:
                return [], [str(exc)]
            if commit is not None:
                commits.append(commit)
        return commits, []

    def _swap(self, new: CompiledPolicy, commits: list[Callable[[], None]], reason: str) -> ReloadOutcome:
        old = self.policy
        for commit in commits:
            commit()
        for listener in self.listeners:
            listener(old, new)
        self.policy = new  # the one assignment every reader sees whole
        self.loaded_at = self.last_reload_at or self.clock()
        metrics.set_policy_loaded(new.version, self.loaded_at)
        log.info("policy reload (%s): now serving %s (was %s)", reason, new.version, old.version)
        return "loaded"

    def _refuse(self, version: str, problems: list[str], reason: str) -> ReloadOutcome:
        at = self.last_reload_at or self.clock()
        self.last_refused = Refusal(version=version, at=at, diagnostics=problems)
        metrics.set_policy_refused(version, at)
        more = len(problems) - MAX_LOGGED
        log.error(
            "policy reload (%s) refused bundle %s: %d problem%s; still serving %s\n%s%s",
            reason,
            version,
            len(problems),
            "" if len(problems) == 1 else "s",
            self.policy.version,
            "\n".join(problems[:MAX_LOGGED]),
            f"\n... and {more} more" if more > 0 else "",
        )
        return "refused"

    def start(self, mode: ReloadMode) -> None:
        """Reload on SIGHUP, and on file changes unless `mode` is off; call on the running loop."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # no signals here
            loop.add_signal_handler(signal.SIGHUP, self._on_signal)
            self._signals.append(signal.SIGHUP)
        if mode != "off":
            self.watching = mode
            self._tasks.append(asyncio.create_task(self._watch(mode == "poll"), name="policy-watch"))

    async def stop(self) -> None:
        self._stop.set()
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _on_signal(self) -> None:
        self._tasks.append(asyncio.create_task(self._reload_logged("SIGHUP"), name="policy-reload"))

    async def _reload_logged(self, reason: str) -> None:
        try:
            await self.reload(reason)
        except Exception:  # a bug in a reload must never take the serving process down
            log.exception("policy reload (%s) failed; still serving %s", reason, self.policy.version)

    async def _watch(self, polling: bool) -> None:
        paths = self.paths()
        wanted = [p.resolve() for p in (paths.policies, paths.templates, paths.providers)]
        watches = _watched(wanted)
        log.info("watching %s for policy changes", ", ".join(str(r) for r, _ in watches))
        streams = [self._watch_one(root, recursive, wanted, polling) for root, recursive in watches]
        await asyncio.gather(*streams)

    async def _watch_one(self, root: Path, recursive: bool, wanted: list[Path], polling: bool) -> None:
        async for changes in watchfiles.awatch(
            root,
            watch_filter=lambda _change, path: _relevant(Path(path), wanted),
            debounce=DEBOUNCE_MS,
            stop_event=self._stop,
            force_polling=polling,
            poll_delay_ms=500,
            recursive=recursive,
        ):
            names = sorted({Path(p).name for _, p in changes})
            await self._reload_logged(f"changed {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}")


def _version_of(paths: BundlePaths) -> str:
    """The version a refused bundle would have had, for the logs and `GET /v1/policy`."""
    try:
        return policy_version(paths.all_files(), paths.policies)
    except OSError:
        return "unreadable"


def _watched(wanted: list[Path]) -> list[tuple[Path, bool]]:
    """(directory, recursive) pairs covering the bundle's trees and files.

    A file (providers.yaml) is watched through its directory, not recursively (that is
    often the repository root, with `.git`, `.venv` and `var/` below it): editors and
    `git pull` replace a file by renaming over it, which a watch on the file would lose.
    """
    trees = [p for p in wanted if p.is_dir()]
    trees = [t for t in trees if not any(t != o and t.is_relative_to(o) for o in trees)]
    watches = [(t, True) for t in trees]
    for path in wanted:
        if not path.is_dir() and path.parent.exists() and not any(path.is_relative_to(t) for t in trees):
            watches.append((path.parent, False))
    return sorted(set(watches))


def _relevant(path: Path, wanted: list[Path]) -> bool:
    """A change inside the policies or templates tree, or to the providers file.

    Kubernetes updates a mounted ConfigMap by swapping a `..data` symlink in the directory:
    that is inside the watched tree too.
    """
    return any(path.is_relative_to(w) for w in wanted) or path.name.startswith("..")
