"""The JSON routes the console reads, over HTTP on SQLite and PostgreSQL with a real Redis:
the bundle and its files, the status of queues and breakers, a user's recent notifications,
console links and the caller's own scope; and the console's files with their headers."""

from __future__ import annotations

import datetime as dt
import re

import httpx
import msgspec
import pytest

from gateway.api.app import create_app
from gateway.api.console_links import LinkRequest, covers, issue
from gateway.api.console_routes import CONTENT_SECURITY_POLICY
from gateway.policy.source import load_yaml
from gateway.providers.guard import ProviderGuard
from gateway.redact import Secret
from gateway.services import Services
from gateway.status import provider_specs
from tests.conftest import REPO
from tests.harness import ADA, admin_key, client, eventually, store_user

SHIPPED = {"event": "order.shipped", "user_id": "u_ada", "data": {"order_id": "A-7", "carrier": "UPS"}}
SECRET = Secret("console-link-secret-for-tests-0123456789")


def with_console_secret(services: Services) -> None:
    services.settings = msgspec.structs.replace(services.settings, console_secret=SECRET)


def raw(services: Services) -> httpx.AsyncClient:
    app = create_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_the_console_is_served_open_with_a_strict_content_security_policy(services: Services) -> None:
    async with raw(services) as http:
        page = await http.get("/console/")
        script = await http.get("/console/js/app.js")
    assert page.status_code == 200 and '<script type="module" src="/console/js/app.js">' in page.text
    assert "<script>" not in page.text  # no inline script anywhere in the page
    for response in (page, script):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY + ";"
    assert script.headers["content-type"].startswith("text/javascript")


def test_the_console_files_use_no_inner_html_and_load_nothing_from_elsewhere() -> None:
    static = REPO / "gateway" / "console" / "static"
    sources = {p: p.read_text() for p in static.rglob("*") if p.suffix in (".js", ".html", ".css")}
    assert len(sources) >= 10
    for path, text in sources.items():
        assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", text), path
        assert "http://" not in text and "https://" not in text.replace("https://blog", ""), path
        assert "eval(" not in text and "new Function" not in text, path


async def test_the_bundle_lists_rules_in_precedence_with_files_and_lines(services: Services) -> None:
    token = await admin_key(services, "reader", events=["order.*"], admin=False)
    async with client(services, token) as http:
        response = await http.get("/v1/policy/bundle")
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["version"] == services.policy.version
    marketing = next(c for c in bundle["categories"] if c["name"] == "marketing")
    assert [(r["name"], r["precedence"], r["where"]) for r in marketing["rules"]] == [
        ("weekly-digest", 1, {"file": "policies/marketing.yaml", "line": 29}),
        ("promotions", 2, {"file": "policies/marketing.yaml", "line": 35}),
    ]
    assert [c["name"] for c in marketing["caps"]] == ["marketing-email-per-day", "marketing-push-per-day"]
    assert bundle["defaults"]["quiet_hours"] == {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "start": "22:00",
        "end": "08:00",
    }
    assert [t["name"] for t in bundle["tiers"]] == ["critical", "standard", "bulk"]  # fastest first
    assert {p["name"]: p["fallback"] for p in bundle["priorities"]}["urgent"] == ["push", "sms", "email"]
    shipped = next(e for e in bundle["events"] if e["name"] == "order.shipped")
    assert shipped["locales"] == ["fr"] and shipped["example"]["order_id"]
    assert any(s["name"] == "weekly-digest-monday" and s["cron"] for s in bundle["schedules"])


async def test_a_bundle_file_is_served_by_the_path_traces_cite_and_nothing_else(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        policy = await http.get("/v1/policy/file", params={"path": "policies/marketing.yaml"})
        template = await http.get("/v1/policy/file", params={"path": "templates/order.shipped/email.yaml"})
        refused = [
            await http.get("/v1/policy/file", params={"path": p})
            for p in ("../pyproject.toml", "pyproject.toml", "/etc/passwd", "policies/../pyproject.toml")
        ]
    assert policy.status_code == 200
    assert policy.json()["text"].splitlines()[28] == "  - name: weekly-digest"  # line 29
    assert "subject:" in template.json()["text"]
    for response in refused:
        assert response.status_code == 404
        assert response.json()["error"]["field"] == "path"


async def test_status_shows_queue_depth_due_ages_and_breakers(services: Services) -> None:
    await store_user(services, ADA)
    token = await admin_key(services)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    async with client(services, token) as http:
        assert (await http.post("/v1/intents", json=SHIPPED)).status_code == 202
        scheduled = {**SHIPPED, "send_at": later, "data": {"order_id": "A-8", "carrier": "UPS"}}
        assert (await http.post("/v1/intents", json=scheduled)).status_code == 202

        async def queued() -> bool:
            status = (await http.get("/v1/status")).json()
            standard = next(q for q in status["queues"] if q["queue"] == "standard")
            return bool(standard["depth"] >= 2)

        await eventually(queued)
        specs = provider_specs(load_yaml(REPO / "providers.yaml").data)
        guard = ProviderGuard(services.redis, services.keys, specs)
        for _ in range(20):  # sendgrid opens at 50% of at least 20 calls
            await guard.record("sendgrid", failed=True)
        await guard.record("smtp", failed=True)
        status = (await http.get("/v1/status")).json()
    assert status["redis"] == {"ok": True, "detail": "ok"}
    assert status["policy"]["version"] == services.policy.version
    standard = next(q for q in status["queues"] if q["queue"] == "standard")
    assert standard["tiers"] == ["standard"] and standard["depth"] == 2 and standard["due"] == 1
    assert standard["oldest_due_age_seconds"] >= 0 and standard["next_due_in_seconds"] is None
    providers = {p["provider"]: p for p in status["providers"]}
    assert providers["sendgrid"]["state"] == "open" and providers["sendgrid"]["failure_rate"] == 1.0
    assert providers["sendgrid"]["open_until"] is not None
    assert (providers["smtp"]["state"], providers["smtp"]["calls"], providers["smtp"]["failures"]) == (
        "closed",
        1,
        1,
    )
    assert providers["inbox"]["guarded"] is False and providers["inbox"]["failure_rate"] is None


async def test_recent_notifications_of_a_user_are_paged_and_scoped_to_the_producer(
    services: Services,
) -> None:
    await store_user(services, ADA)
    admin = await admin_key(services)
    producer = await admin_key(services, "checkout", events=["order.*"], admin=False)
    ids = []
    async with client(services, producer) as http:
        for n in range(3):
            response = await http.post(
                "/v1/intents", json={**SHIPPED, "data": {"order_id": f"A-{n}", "carrier": "UPS"}}
            )
            ids.append(response.json()["notification_id"])
    async with client(services, admin) as http:
        response = await http.post(
            "/v1/intents", json={**SHIPPED, "data": {"order_id": "X", "carrier": "UPS"}}
        )
        ids.append(response.json()["notification_id"])
        first = (await http.get("/v1/users/u_ada/notifications", params={"limit": 3})).json()
        rest = (
            await http.get("/v1/users/u_ada/notifications", params={"cursor": first["next_cursor"]})
        ).json()
        nobody = (await http.get("/v1/users/u_nobody/notifications")).json()
        bad_limit = await http.get("/v1/users/u_ada/notifications", params={"limit": 0})
    async with client(services, producer) as http:
        own = (await http.get("/v1/users/u_ada/notifications")).json()
    assert [n["notification_id"] for n in first["notifications"] + rest["notifications"]] == ids[::-1]
    assert rest["next_cursor"] is None and nobody == {"notifications": [], "next_cursor": None}
    assert {d["channel"] for d in first["notifications"][0]["deliveries"]} >= {"email", "push", "in_app"}
    assert [n["notification_id"] for n in own["notifications"]] == ids[:3][::-1]  # not the admin's one
    assert bad_limit.status_code in (400, 422)


async def test_the_timeline_is_the_notifications_story_and_hidden_from_other_producers(
    services: Services,
) -> None:
    await store_user(services, ADA)
    admin = await admin_key(services)
    other = await admin_key(services, "other", events=["order.*"], admin=False)
    async with client(services, admin) as http:
        notification_id = (await http.post("/v1/intents", json=SHIPPED)).json()["notification_id"]
        story = (await http.get(f"/v1/notifications/{notification_id}/timeline")).json()
        missing = await http.get("/v1/notifications/n_missing/timeline")
    async with client(services, other) as http:
        hidden = await http.get(f"/v1/notifications/{notification_id}/timeline")
    assert story["notification"]["notification_id"] == notification_id
    by_channel = {d["channel"]: d for d in story["deliveries"]}
    assert [e["kind"] for e in by_channel["email"]["entries"]] == ["accepted"]
    assert [e["kind"] for e in by_channel["sms"]["entries"]] == ["accepted", "suppressed"]
    assert by_channel["sms"]["entries"][1]["summary"] == "suppressed: opted_out"
    for response in (missing, hidden):
        assert response.status_code == 404 and response.json()["error"]["field"] == "notification_id"


async def test_the_current_key_says_who_it_is(services: Services) -> None:
    token = await admin_key(services, "checkout", events=["order.*"], admin=False)
    async with client(services, token) as http:
        me = (await http.get("/v1/keys/current")).json()
    assert me == {
        "name": "checkout",
        "kind": "api_key",
        "admin": False,
        "events": ["order.*"],
        "expires_at": None,
    }


async def test_a_console_link_signs_in_narrowed_and_stops_with_its_issuer(services: Services) -> None:
    with_console_secret(services)
    token = await admin_key(services, "ops")
    async with client(services, token) as http:
        issued = await http.post("/v1/console-links", json={"events": ["order.*"], "ttl_seconds": 600})
        too_short = await http.post("/v1/console-links", json={"ttl_seconds": 30})
    assert issued.status_code == 201, issued.text
    assert too_short.status_code == 422 and too_short.json()["error"]["field"] == "ttl_seconds"
    link = issued.json()
    assert link["path"] == f"/console/#link={link['token']}" and link["token"].startswith("cl_")
    async with client(services, link["token"]) as http:
        me = (await http.get("/v1/keys/current")).json()
        allowed = await http.post("/v1/dry-run", json={"intent": SHIPPED, "user": ADA})
        refused = await http.post(
            "/v1/dry-run", json={"intent": {**SHIPPED, "event": "security.otp"}, "user": ADA}
        )
        no_admin = await http.get("/v1/dead-letters")
        no_relink = await http.post("/v1/console-links", json={})
    assert (me["name"], me["kind"], me["admin"], me["events"]) == ("ops", "console_link", False, ["order.*"])
    assert allowed.status_code == 200
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "event_not_allowed"
    assert no_admin.status_code == 403
    assert no_relink.status_code == 403

    await services.api_keys.revoke("ops", dt.datetime.now(dt.UTC))
    async with client(services, link["token"]) as http:
        revoked = await http.get("/v1/keys/current")
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "revoked_console_link"


async def test_console_links_refuse_forgeries_expiry_and_wider_scopes(services: Services) -> None:
    with_console_secret(services)
    narrow = await admin_key(services, "narrow", events=["order.*"], admin=True)
    async with client(services, narrow) as http:
        wider = await http.post("/v1/console-links", json={"events": ["security.*"]})
    assert wider.status_code == 403 and wider.json()["error"]["field"] == "events[0]"

    issuer = await services.api_keys.authenticate(narrow)
    assert issuer is not None
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    expired = issue(SECRET, issuer, LinkRequest(ttl_seconds=3600), past).token
    forged = issue(
        Secret("another-secret-entirely-0123456789ab"), issuer, LinkRequest(), dt.datetime.now(dt.UTC)
    ).token
    async with client(services, expired) as http:
        late = await http.get("/v1/keys/current")
    async with client(services, forged) as http:
        fake = await http.get("/v1/keys/current")
    assert late.status_code == 401 and late.json()["error"]["code"] == "expired_console_link"
    assert fake.status_code == 401 and fake.json()["error"]["code"] == "invalid_console_link"


async def test_without_a_console_secret_links_are_refused_but_keys_work(services: Services) -> None:
    token = await admin_key(services)
    async with client(services, token) as http:
        response = await http.post("/v1/console-links", json={})
        me = await http.get("/v1/keys/current")
    assert response.status_code == 503 and response.json()["error"]["code"] == "console_links_not_configured"
    assert me.status_code == 200


@pytest.mark.parametrize(
    ("granted", "pattern", "covered"),
    [
        (("*",), "order.*", True),
        (("order.*",), "order.shipped", True),
        (("order.*",), "order.eu.*", True),
        (("order.*",), "*", False),
        (("order.*",), "orders.x", False),
        (("order.shipped",), "order.*", False),
        (("order.shipped",), "order.shipped", True),
    ],
)
def test_a_link_pattern_is_covered_only_by_a_wider_grant(
    granted: tuple[str, ...], pattern: str, covered: bool
) -> None:
    assert covers(granted, pattern) is covered
