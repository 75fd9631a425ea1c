"""The dry-run endpoint and the policy inspection endpoint.

Handlers close over the `Gateway` they serve instead of asking Litestar's dependency
injection for it on every request (about 7 us a request, 3% of a dry-run).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import MediaType, Request, Response, Router, get, post
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from gateway.api.auth import require_event
from gateway.api.context import Gateway
from gateway.api.openapi import BODY, KEYED, errors
from gateway.decisions import decide_for, dry_run
from gateway.model import Decision, DryRunRequest, to_json
from gateway.policy.compiled import CompiledPolicy
from gateway.reload import ReloadStatus
from gateway.store.keys import ApiKey
from gateway.templating.preview import Preview, preview


class RuleSummary(msgspec.Struct, frozen=True):
    name: str
    category: str
    file: str
    line: int
    events: list[str]
    priorities: list[str] | None
    condition: str | None
    tiers: dict[str, str]
    channels: list[str]
    description: str


class PolicyFileSummary(msgspec.Struct, frozen=True):
    path: str
    kind: str
    sha256: str


class PolicySummary(msgspec.Struct, frozen=True):
    version: str
    cel_runtime: str
    files: list[PolicyFileSummary]
    rules: list[RuleSummary]
    channels: list[str]
    tiers: list[str]
    reload: ReloadStatus | None = None  # this process's reloads; None where no reload can happen


def policy_router(gateway: Gateway) -> Router:
    @post(
        "/dry-run",
        status_code=200,
        summary="Explain what the gateway would do with an intent",
        description="Decides without storing, sending or counting anything. Where `user` or "
        "`history` is absent the stored state is used; `at` replaces the clock. Every delivery and "
        "suppression is traced to the policy rule, file, line and CEL expression that made it.",
        responses={
            200: ResponseSpec(data_container=Decision, description="The decision, with its trace"),
            **errors(KEYED, BODY, 403, 404),
        },
    )
    async def dry_run_handler(
        data: JSONBody[DryRunRequest], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """Decide without storing, sending or counting anything.

        Where `user` or `history` is absent the stored state is used; `at` replaces the clock.
        """
        _in_scope(request, data)
        policy = gateway.current_policy()
        decision = await dry_run(data, policy, gateway.users, gateway.history, gateway.clock)
        # Encoded here with msgspec (~3 us for a 2 KB decision): Litestar's generic
        # serialisation path costs several times that on the hot path.
        return Response(content=to_json(decision), media_type=MediaType.JSON)

    @post(
        "/templates/preview",
        status_code=200,
        summary="Render an intent's messages per channel, without sending",
        description="The messages each channel the policy picks would carry (standby channels "
        "too), from the dry run's request. A message that cannot render answers 422 "
        "`template_error` naming the template, line and variable.",
        responses={
            200: ResponseSpec(data_container=Preview, description="The rendered messages"),
            **errors(KEYED, BODY, 403, 404),
        },
    )
    async def preview_handler(
        data: JSONBody[DryRunRequest], request: Request[Any, Any, Any]
    ) -> Response[bytes]:
        """The messages each channel the policy picks would carry (standby channels too).

        Takes the dry run's request; where `user` is absent the stored user is used. A
        message that cannot render answers 422 `template_error` naming template and variable.
        """
        _in_scope(request, data)
        policy = gateway.current_policy()  # the same version decides and renders
        decision, user = await decide_for(data, policy, gateway.users, gateway.history, gateway.clock)
        rendered = preview(decision, data.intent, user, policy)
        return Response(content=msgspec.json.encode(rendered), media_type=MediaType.JSON)

    @get(
        "/policy",
        summary="The policy version and rules in force",
        description="The version (a hash of the bundle), the CEL runtime, each file with its "
        "digest, and each rule with its events, condition, tiers and channels.",
        responses=errors(KEYED),
    )
    async def policy_handler() -> PolicySummary:
        """The version in force and its rules; under `notigate serve`, its reloads too."""
        summary = summarize(gateway.current_policy())
        if gateway.services is None:
            return summary
        return msgspec.structs.replace(summary, reload=gateway.services.bundle.status())

    return Router(
        path="/v1", route_handlers=[dry_run_handler, preview_handler, policy_handler], tags=["policy"]
    )


def _in_scope(request: Request[Any, Any, Any], data: DryRunRequest) -> None:
    """A key limited to some events may dry-run and preview only those (as it may only send
    those); the engine-only app has no keys and no limit."""
    key = request.scope.get("user")
    if isinstance(key, ApiKey):
        require_event(key, data.intent.event, "intent.event")


def summarize(policy: CompiledPolicy) -> PolicySummary:
    return PolicySummary(
        version=policy.version,
        cel_runtime=policy.runtime,
        files=[PolicyFileSummary(path=f.path, kind=f.kind, sha256=f.sha256) for f in policy.files],
        rules=[
            RuleSummary(
                name=r.name,
                category=r.category,
                file=r.origin.file,
                line=r.origin.line,
                events=list(r.patterns),
                priorities=sorted(r.priorities) if r.priorities else None,
                condition=r.condition.source if r.condition else None,
                tiers={p: t.name for p, t in r.tiers.items()},
                channels=list(r.channels),
                description=r.description,
            )
            for r in policy.rules
        ],
        channels=sorted(policy.channels),
        tiers=sorted(policy.tiers),
    )
