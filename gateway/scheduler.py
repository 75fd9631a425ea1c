"""The scheduler: recurring schedules of the policy fire intents, through the intake, once each.

Each pass (every `NOTIGATE_SCHEDULER_INTERVAL` seconds, in every worker running the relay):
for each schedule, for each zone users are in, evaluate the cron once in that zone
(`gateway.cron.plan_zone`, pure), record occurrences older than the schedule's `misfire`
grace as `missed`, and fire the due ones: page through the zone's users in id order,
evaluate the segment for each, and submit an intent per selected user through
`Intake.accept`, the very path `POST /v1/intents` takes, so consent, caps, quiet hours,
dedup and digest folding all apply.

Exactly once per user and occurrence rests on two things: the run row (one per schedule,
zone and occurrence, claimed by a unique key and a lease; see `gateway.store.schedules`)
and each intent's idempotency key `schedule:<name>:<local occurrence>:<user_id>`, which
makes a page submitted twice (a crash after the intake's commit, two schedulers whose
leases overlap) a replay rather than a second notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.cron import Occurrence, ZonePlan, plan_zone
from gateway.errors import Unavailable
from gateway.intake import Intake
from gateway.model import Intent, UserState, zone
from gateway.policy.cel import CelEvalError, CelInput
from gateway.policy.cel import runtime as cel_runtime
from gateway.policy.compiled import CompiledPolicy, Schedule
from gateway.policy.engine import user_map
from gateway.store.recipients import SqlRecipients
from gateway.store.schedules import Run, ScheduleStore

log = logging.getLogger("gateway.scheduler")
PRODUCER = "scheduler"  # the producer of every scheduled intent (idempotency keys are per producer)
YIELD_EVERY = 50  # segment evaluations between handing the event loop back


# --- the functional core --------------------------------------------------------------


def placeholders(schedule: Schedule, occurrence: Occurrence) -> dict[str, str]:
    iso = occurrence.local.isocalendar()
    return {
        "week": f"{iso.year}-W{iso.week:02d}",
        "date": occurrence.local.date().isoformat(),
        "occurrence": occurrence.key,
        "schedule": schedule.name,
    }


def _fill(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return string.Template(value).substitute(values)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def idempotency_key(schedule: str, occurrence: Occurrence, user_id: str) -> str:
    return f"schedule:{schedule}:{occurrence.key}:{user_id}"


def schedule_intent(schedule: Schedule, occurrence: Occurrence, user_id: str) -> Intent:
    """The intent a schedule fires for one user at one occurrence; the same inputs, the same intent."""
    return Intent(
        event=schedule.event,
        user_id=user_id,
        data=_fill(dict(schedule.data), placeholders(schedule, occurrence)),
        priority=schedule.priority,
        idempotency_key=idempotency_key(schedule.name, occurrence, user_id),
    )


def in_segment(schedule: Schedule, user: UserState, tz_name: str, at: dt.datetime, runtime: str) -> bool:
    """Whether the schedule's segment selects the user; an evaluation error counts as `on_error` says."""
    variables = CelInput(now=at, user=user_map(user, tz_name))
    try:
        value = schedule.segment.program.evaluate(cel_runtime(runtime).activation(variables))
    except CelEvalError:
        return schedule.segment.on_error
    return value if isinstance(value, bool) else schedule.segment.on_error


# --- the loop -------------------------------------------------------------------------


@dataclass
class PassReport:
    """What one pass did, for logs and tests."""

    fired: int = 0
    failed: int = 0
    runs: int = 0
    missed: int = 0


class Scheduler:
    def __init__(
        self,
        *,
        policy: Callable[[], CompiledPolicy],
        store: ScheduleStore,
        recipients: SqlRecipients,
        intake: Intake,
        clock: Callable[[], dt.datetime],
        owner: str,
        page: int = 500,
        lease: dt.timedelta = dt.timedelta(seconds=120),
        interval: float = 30.0,
    ) -> None:
        self.policy = policy
        self.store = store
        self.recipients = recipients
        self.intake = intake
        self.clock = clock
        self.owner = owner
        self.page = page
        self.lease = lease
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                report = await self.run_once()
                if report.fired or report.missed:
                    log.info(
                        "scheduler: %d intents fired, %d refused, %d occurrences missed",
                        report.fired,
                        report.failed,
                        report.missed,
                    )
            except (Unavailable, OSError) as exc:
                log.info("scheduler waiting for its dependencies: %s", exc)
            except Exception:  # a bad pass must not end the scheduler: the next one may succeed
                log.exception("scheduler pass failed; trying again in %gs", self.interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def run_once(self) -> PassReport:
        """One pass over every schedule and zone; safe to run in several workers at once."""
        policy = self.policy()
        report = PassReport()
        if not policy.schedules:
            return report
        states = await self.store.states()
        if unseen := [s.name for s in policy.schedules if s.name not in states]:
            await self.store.seen(unseen, self.clock())
            states = await self.store.states()
        zones = await self.store.zones(policy.defaults.timezone)
        for schedule in policy.schedules:
            state = states.get(schedule.name)
            paused = state is not None and state.paused
            now = self.clock()
            cursors = {z: await self.store.cursor(schedule.name, z) for z in zones}
            since = state.first_seen if state is not None else now
            plans = await asyncio.to_thread(self._plans, schedule, cursors, since, now)
            for tz_name in zones:
                _, open_runs = cursors[tz_name]
                for run in open_runs:
                    await self._resume(schedule, run, paused, report)
                plan = plans[tz_name]
                if plan.missed or (plan.due and paused):
                    await self._record_unfired(schedule, tz_name, plan, paused, now, report)
                if paused:
                    continue
                for occurrence in plan.due:
                    started = await self.store.start(
                        schedule.name, tz_name, occurrence, self.owner, self.clock() + self.lease, now
                    )
                    if started is not None:
                        report.runs += 1
                        await self._fire(schedule, started, occurrence, report)
        return report

    def _plans(
        self,
        schedule: Schedule,
        cursors: Mapping[str, tuple[dt.datetime | None, list[Run]]],
        since: dt.datetime,
        now: dt.datetime,
    ) -> dict[str, ZonePlan]:
        """The cron, evaluated once per zone (in a thread: a long outage means a long walk)."""
        return {
            tz_name: plan_zone(
                schedule.cron,
                zone(tz_name),
                # A zone without runs starts where the schedule was first seen, or within the
                # grace of a schedule just deployed: a new schedule fires what is still on time.
                cursor=cursor if cursor is not None else min(since, now - schedule.misfire),
                now=now,
                misfire=schedule.misfire,
            )
            for tz_name, (cursor, _) in cursors.items()
        }

    async def _record_unfired(
        self,
        schedule: Schedule,
        tz_name: str,
        plan: ZonePlan,
        paused: bool,
        now: dt.datetime,
        report: PassReport,
    ) -> None:
        detail = (
            f"{plan.skipped} earlier occurrences were missed too (not recorded one by one)"
            if plan.skipped
            else None
        )
        await self.store.record(schedule.name, tz_name, plan.missed, "missed", now, detail)
        report.missed += len(plan.missed) + plan.skipped
        if paused:
            await self.store.record(
                schedule.name, tz_name, plan.due, "paused", now, "the schedule was paused at its time"
            )

    async def _resume(self, schedule: Schedule, run: Run, paused: bool, report: PassReport) -> None:
        """A run left `running` (its scheduler died, or is still at it): take it over once its lease ends."""
        now = self.clock()
        claimed = await self.store.claim(run.id, self.owner, now + self.lease, now)
        if claimed is None:
            return  # another scheduler holds it
        if paused:
            await self.store.finish(run.id, "paused", now, owner=self.owner, detail="paused while running")
            return
        if now - run.occurrence > schedule.misfire:
            await self.store.finish(
                run.id,
                "missed",
                now,
                owner=self.owner,
                detail=f"cut short after {run.after_user or 'no user'}; the rest was past the misfire grace",
            )
            report.missed += 1
            return
        occurrence = Occurrence(at=run.occurrence, local=run.occurrence.astimezone(zone(run.timezone)))
        await self._fire(schedule, claimed, occurrence, report)

    async def _fire(self, schedule: Schedule, run: Run, occurrence: Occurrence, report: PassReport) -> None:
        policy = self.policy()
        default_zone = policy.defaults.timezone
        after = run.after_user
        while True:
            states = await self.store.states()
            if (state := states.get(schedule.name)) is not None and state.paused:
                await self.store.finish(run.id, "paused", self.clock(), owner=self.owner, detail="paused")
                return
            ids = await self.store.users_page(run.timezone, default_zone, after, self.page)
            if not ids:
                break
            users = await self.recipients.get_users(ids)
            selected: list[str] = []
            for n, user_id in enumerate(ids, 1):
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # CEL is synchronous: let the worker's other loops in
                user = users.get(user_id)
                if user is not None and in_segment(
                    schedule, user, run.timezone, occurrence.at, policy.runtime
                ):
                    selected.append(user_id)
            fired, failed = await self._submit(schedule, occurrence, selected)
            report.fired += fired
            report.failed += failed
            after = ids[-1]
            if not await self.store.advance(
                run,
                self.owner,
                after_user=after,
                seen=len(ids),
                fired=fired,
                failed=failed,
                until=self.clock() + self.lease,
            ):
                log.warning("schedule %s: run %s was taken over by another scheduler", schedule.name, run.id)
                return
            if len(ids) < self.page:
                break
        await self.store.finish(run.id, "done", self.clock(), owner=self.owner)

    async def _submit(
        self, schedule: Schedule, occurrence: Occurrence, user_ids: list[str]
    ) -> tuple[int, int]:
        """Submit a page's intents through the intake (batched there); (accepted, refused)."""
        intents = [schedule_intent(schedule, occurrence, u) for u in user_ids]
        results = await asyncio.gather(
            *(self.intake.accept(i, producer=PRODUCER) for i in intents), return_exceptions=True
        )
        failed = 0
        for intent, result in zip(intents, results, strict=True):
            if isinstance(result, Unavailable):
                raise result  # nothing advances: the page is submitted again, its keys replay
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                failed += 1
                log.warning("schedule %s: intake refused %s: %s", schedule.name, intent.user_id, result)
        return len(intents) - failed, failed
