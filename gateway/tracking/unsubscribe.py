"""One-click unsubscribe (RFC 8058): signed links in email headers, and what they turn off.

Each email of a category the recipient may opt out of carries

    List-Unsubscribe: <https://notify.example.com/v1/unsubscribe/us_...>, <mailto:...>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

The token names (user, category) and is signed with HMAC-SHA256 under
`NOTIGATE_UNSUBSCRIBE_SECRET` (`gateway/signing.py`, the inbox tokens' scheme under its own
domain). It does not expire: a link in a year-old email must still work. Rotating the
secret breaks every link sent before.

A `POST` with `List-Unsubscribe=One-Click` turns the category off **for email**: RFC 8058
unsubscribes from the list the message came from, and the recipient who clicks "unsubscribe"
in a mail client means that mail, not the push notifications of the same app. Categories
are sets of event patterns in the policy (each rule's `match.events`), so the preference
rows written are `{event: <pattern>, channel: email, enabled: false}`, one per pattern, and
any row of the user's that would still enable email inside the category is replaced.

No link is added where an opt-out could not take effect or should not be offered:
- the priority or the rule bypasses `opt_out` (urgent, security alerts);
- the category is in `NOTIGATE_UNSUBSCRIBE_EXEMPT` (default `transactional`: receipts and
  shipping notices are what the user asked for; Gmail and Yahoo ask one-click unsubscribe of
  bulk and marketing mail, not of transactional mail). Such mail may still be turned off
  with the preferences API;
- `NOTIGATE_UNSUBSCRIBE_SECRET` is unset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from gateway import signing
from gateway.errors import ClientError, Unavailable
from gateway.model import Preference
from gateway.policy.cel_functions import glob_event
from gateway.policy.compiled import CompiledPolicy
from gateway.redact import Secret
from gateway.settings import Settings
from gateway.store.recipients import SqlRecipients

PREFIX = "us_"
PATH = "/v1/unsubscribe/"
ONE_CLICK = "List-Unsubscribe=One-Click"
_DOMAIN = b"notigate.unsubscribe.v1:"


class InvalidUnsubscribeToken(ClientError):
    status = 404  # a link that is not ours names nothing: as if the page did not exist
    code = "invalid_unsubscribe_token"


def issue(secret: Secret, user_id: str, category: str) -> str:
    return signing.seal(secret, _DOMAIN, PREFIX, msgspec.json.encode([user_id, category]))


def verify(secret: Secret | None, token: str) -> tuple[str, str]:
    """(user id, category) of a link this gateway signed; InvalidUnsubscribeToken otherwise."""
    if secret is None or not secret:
        raise Unavailable(
            "unsubscribe links are disabled: set NOTIGATE_UNSUBSCRIBE_SECRET (32 characters or more) "
            "on every API process and worker",
            code="unsubscribe_not_configured",
        )
    try:
        user_id, category = msgspec.json.decode(
            signing.unseal(secret, _DOMAIN, PREFIX, token), type=tuple[str, str]
        )
    except (signing.BadToken, msgspec.DecodeError):
        raise InvalidUnsubscribeToken(
            "this unsubscribe link is malformed or was not issued by this gateway"
        ) from None
    return user_id, category


@dataclass(frozen=True, slots=True)
class UnsubscribeLinks:
    """What a worker needs to put the headers on an email: the secret and where we are."""

    secret: Secret
    base_url: str
    mailto: str | None = None
    exempt: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> UnsubscribeLinks | None:
        if settings.unsubscribe_secret is None:
            return None
        return cls(
            settings.unsubscribe_secret,
            settings.public_base(),
            settings.unsubscribe_mailto,
            frozenset(settings.unsubscribe_exempt),
        )

    def url(self, user_id: str, category: str) -> str:
        return f"{self.base_url}{PATH}{issue(self.secret, user_id, category)}"


def headers_for(
    links: UnsubscribeLinks | None, policy: CompiledPolicy, claimed: Any, notification: Any
) -> dict[str, str]:
    """The RFC 8058 headers for a delivery's message, or none (see the module's docstring)."""
    category = getattr(notification, "category", None)
    if links is None or claimed.channel != "email" or not category or category in links.exempt:
        return {}
    priority = policy.priorities.get(notification.priority)
    if priority is not None and "opt_out" in priority.bypass:
        return {}
    rule = next((r for r in policy.rules if r.name == getattr(notification, "rule", None)), None)
    if rule is not None and "opt_out" in rule.bypass:
        return {}
    if not category_patterns(policy, category):
        return {}
    targets = [f"<{links.url(claimed.user_id, category)}>"]
    if links.mailto:
        targets.append(f"<mailto:{links.mailto}?subject=unsubscribe>")
    return {"List-Unsubscribe": ", ".join(targets), "List-Unsubscribe-Post": ONE_CLICK}


def category_patterns(policy: CompiledPolicy, category: str) -> list[str]:
    """The event patterns of a category's rules, in policy order; never the catch-all `*`."""
    seen: dict[str, None] = {}
    for rule in policy.rules:
        if rule.category == category:
            seen.update((p, None) for p in rule.patterns if p != "*")
    return list(seen)


def without_category(preferences: Sequence[Preference], patterns: Sequence[str]) -> list[Preference]:
    """The user's preferences with the category's email turned off; the same when run again.

    A disabling email row per pattern, plus one for every row that would otherwise enable
    email for part of the category: preference matching takes the most specific row, so a
    user's `{event: marketing.promo, channel: "*", enabled: true}` would outrank a
    `marketing.*` email row, and is outranked in turn by `marketing.promo` on email.
    """
    targets = dict.fromkeys(patterns)
    for row in preferences:
        inside = any(glob_event(pattern, row.event) for pattern in patterns)
        if row.enabled and row.channel in ("email", "*") and inside:
            targets[row.event] = None
    kept = [p for p in preferences if not (p.channel == "email" and p.event in targets)]
    return kept + [Preference(event=event, channel="email", enabled=False) for event in targets]


async def opt_out(recipients: SqlRecipients, policy: CompiledPolicy, user_id: str, category: str) -> bool:
    """Turn a category's email off for a user; False when there was nothing to change."""
    patterns = category_patterns(policy, category)
    if not patterns:
        raise ClientError(
            f"category {category!r} is not in the current policy; nothing to unsubscribe from",
            code="unknown_category",
        )
    user = await recipients.get_user(user_id)
    if user is None:
        return False
    wanted = without_category(user.preferences, patterns)
    if wanted == list(user.preferences):
        return False
    return await recipients.put_preferences(user_id, wanted)
