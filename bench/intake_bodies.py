"""What the intake benchmark posts: every body valid against the shipped templates.

A body missing a variable its template needs is answered 422 `template_error` (intake checks
that a message can render before it accepts it), so a benchmark built on such bodies measures
refusals. Each body therefore starts from its template's `example.yaml` data, the same data
`notigate templates check` renders, and overrides only what makes it distinct (ids, codes).
"""

from __future__ import annotations

import functools
import json
import random
from typing import Any

import yaml

from bench.intake_stack import PROBE_USERS
from bench.procs import ROOT

TEMPLATES = ROOT / "templates"

MIX: tuple[tuple[float, str, str], ...] = (
    # (weight, event, priority): what a shop with a social side sends in a day
    (0.40, "order.shipped", "normal"),
    (0.10, "order.delivered", "normal"),
    (0.10, "order.shipped", "low"),
    (0.10, "social.comment", "normal"),
    (0.08, "payment.failed", "normal"),
    (0.10, "marketing.weekly_digest", "low"),
    (0.05, "security.otp", "urgent"),
    (0.07, "security.new_login", "normal"),
)


@functools.cache
def example_data(event: str) -> dict[str, Any]:
    """The `data` of `templates/<event>/example.yaml`: every variable the event's templates use."""
    document = yaml.safe_load((TEMPLATES / event / "example.yaml").read_text())
    return dict(document["data"])


def with_example(event: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` over the template example's: distinct where it matters, complete everywhere."""
    return {**example_data(event), **data}


def _own_data(event: str, n: int, users: int, rng: random.Random) -> dict[str, Any]:
    if event.startswith("social."):
        return {"actor_id": f"u_{rng.randrange(users):06d}", "post_id": f"p_{n}"}
    if event == "security.otp":
        return {"code": f"{rng.randrange(1_000_000):06d}"}
    if event == "payment.failed":
        return {"amount": f"{rng.randrange(5, 500)}.00", "order_id": f"B-{n}"}
    if event.startswith("marketing."):
        return {"week": f"W{n}"}
    if event == "security.new_login":
        return {"device": "Firefox on Linux", "location": "Lyon, France", "login_id": n}
    return {"order_id": f"B-{n}", "carrier": "UPS"}


def intake_intents(count: int, users: int, seed: int = 11) -> list[dict[str, Any]]:
    """`count` distinct intents of the mix (no two alike, so none is a replay or a content
    duplicate by accident), a third with an idempotency key."""
    rng = random.Random(seed)
    weights = [w for w, _, _ in MIX]
    intents = []
    for n in range(count):
        _, event, priority = rng.choices(MIX, weights)[0]
        intent: dict[str, Any] = {
            "event": event,
            "user_id": f"u_{rng.randrange(users):06d}",
            "priority": priority,
            "data": with_example(event, _own_data(event, n, users, rng)),
        }
        if rng.random() < 1 / 3:
            intent["idempotency_key"] = f"bench-{seed}-{n}"
        intents.append(intent)
    return intents


def intake_bodies(count: int, users: int, seed: int = 11) -> list[bytes]:
    """The mix's intents as compact JSON bodies, for wrk and the built-in load generator."""
    return [json.dumps(i, separators=(",", ":")).encode() for i in intake_intents(count, users, seed)]


def bulk_body(n: int, user_ids: list[str]) -> dict[str, Any]:
    """A `low` campaign to `user_ids`: the n-th bulk request of a run."""
    return {
        "event": "order.shipped",
        "priority": "low",
        "user_ids": user_ids,
        "data": with_example("order.shipped", {"order_id": f"C-{n}"}),
    }


def probe_body(n: int, first_code: int = 0) -> dict[str, Any]:
    """The n-th urgent one-time code, to one of the probe users (quiet hours all day)."""
    return {
        "event": "security.otp",
        "user_id": f"p_{n % PROBE_USERS:03d}",
        "priority": "urgent",
        "data": with_example("security.otp", {"code": f"{(first_code + n) % 1_000_000:06d}"}),
    }
