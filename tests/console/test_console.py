"""The console in a real headless Chromium against a live gateway (API and worker running).

Each test signs in as a person would, works the page with the keyboard or the mouse, and
reads what the page shows; screenshots of every page land in var/screenshots/.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.console.conftest import PHONE, LiveGateway, screenshot, sign_in

LA_USER = {
    "user_id": "u_night_owl",
    "timezone": "America/Los_Angeles",
    "quiet_hours": {"start": "22:00", "end": "08:00"},
    "contacts": {"email": "owl@example.com", "devices": [{"platform": "ios", "token": "owl-device-1"}]},
    "preferences": [{"event": "marketing.*", "channel": "email", "enabled": True}],
}


def fill_json(page: Page, label: str, value: Any) -> None:
    import json

    page.get_by_label(label).fill(json.dumps(value, indent=2))


def test_a_refused_key_is_told_so_and_a_good_one_signs_in(page: Page, live_gateway: LiveGateway) -> None:
    page.goto("/console/")
    page.get_by_label("API key or console link").fill("k_nope.not-a-secret")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("This key was refused")
    expect(alert).to_contain_text("unknown or revoked")
    screenshot(page, "sign-in-refused")

    page.get_by_label("API key or console link").fill(live_gateway.admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Signed in: console-admin (admin; API key)")).to_be_visible()
    # The key is kept for this tab only.
    assert page.evaluate("sessionStorage.getItem('notigate.console.key')") == live_gateway.admin_key
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []


def test_explains_a_quiet_hours_deferral_with_its_time_and_rule(
    page: Page, live_gateway: LiveGateway
) -> None:
    """R6: the weekly digest at 23:30 in Los Angeles waits for 08:00 local, and says why."""
    sign_in(page, live_gateway.admin_key, "/console/#/why")
    page.get_by_label("Event").select_option("marketing.weekly_digest")
    page.get_by_label("An ad-hoc user").check()
    fill_json(page, "Ad-hoc user state (JSON, as PUT /v1/users takes it)", LA_USER)
    page.get_by_label("At a given time").check()
    page.get_by_label("Local date and time").fill("2026-11-21T23:30")
    page.get_by_label("Time zone").fill("America/Los_Angeles")
    page.get_by_role("button", name="Explain").click()

    email = page.get_by_role("article", name="email lane")
    expect(email).to_contain_text("deferred: quiet_hours")
    expect(email).to_contain_text("Deferred until Sun 22 Nov, 08:00 (America/Los_Angeles)")
    expect(email).to_contain_text("2026-11-22 16:00 UTC")
    expect(email).to_contain_text("because of the user's quiet hours")
    expect(email).to_contain_text("weekly-digest")
    expect(email.get_by_role("link", name="policies/marketing.yaml:29")).to_be_visible()
    expect(page.get_by_role("article", name="in_app lane")).to_contain_text("suppressed: muted")
    trace = page.locator(".trace")
    expect(trace).to_contain_text("quiet_hours")
    expect(trace).to_contain_text("inside quiet hours 22:00-08:00 (America/Los_Angeles)")
    print("screenshot:", screenshot(page, "why"))
    page.get_by_role("heading", name="Decision").evaluate("(el) => el.closest('section').scrollIntoView()")
    screenshot(page, "why-decision", full_page=False)  # the one docs/console.png is taken from

    # The rule's link opens the policy file at its line.
    email.get_by_role("link", name="policies/marketing.yaml:29").click()
    expect(page.get_by_role("heading", name="Policy file")).to_be_visible()
    hit = page.locator("ol.source li.hit")
    expect(hit).to_have_attribute("id", "L29")
    expect(hit).to_contain_text("- name: weekly-digest")
    screenshot(page, "policy-file")


def test_previews_an_email_in_a_sandboxed_frame_with_its_text_part(
    page: Page, live_gateway: LiveGateway
) -> None:
    sign_in(page, live_gateway.admin_key, "/console/#/preview")
    page.get_by_label("Event").select_option("order.shipped")
    page.get_by_label("Ad-hoc user state (JSON, as PUT /v1/users takes it)").fill(
        '{"user_id": "u_preview", "timezone": "Europe/Paris", '
        '"contacts": {"email": "p@example.com", "phone": "+33612345678", '
        '"devices": [{"platform": "android", "token": "tok-preview"}]}, '
        '"preferences": [{"event": "order.*", "channel": "sms", "enabled": true}]}'
    )
    page.get_by_label("Data (JSON: the template variables)").fill(
        '{"order_id": "A-1001", "carrier": "UPS <b>Express</b>"}'
    )
    page.get_by_role("button", name="Preview").click()

    frame = page.get_by_title("Email HTML: Your order A-1001 has shipped")
    expect(frame).to_have_attribute("sandbox", "")
    body = page.frame_locator("iframe.email-frame").locator("body")
    expect(body).to_contain_text("order A-1001 is on its way with UPS <b>Express</b>")  # escaped by Jinja
    page.get_by_text("Text part").click()
    expect(page.locator("pre.text-part")).to_contain_text("Good news: order A-1001 is on its way")
    # The SMS text template does not escape: the console shows the markup as text, never as markup.
    sms = page.locator(".sms .bubble")
    expect(sms).to_contain_text("UPS <b>Express</b>")
    assert sms.locator("b").count() == 0
    expect(page.locator(".sms")).to_contain_text("1 segment · GSM-7")
    expect(page.locator(".push")).to_contain_text("of 4096 bytes")
    print("screenshot:", screenshot(page, "preview"))

    # A locale variant: French email and push from templates/order.shipped/*.fr.yaml.
    page.get_by_label("Locale").select_option("fr")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_text("locale fr").first).to_be_visible()


def test_a_template_error_names_the_file_and_line(page: Page, live_gateway: LiveGateway) -> None:
    sign_in(page, live_gateway.admin_key, "/console/#/preview")
    page.get_by_label("Event").select_option("order.shipped")
    page.get_by_label("Data (JSON: the template variables)").fill('{"carrier": "UPS"}')
    page.get_by_role("button", name="Preview").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("A template could not render")
    expect(alert).to_contain_text("templates/order.shipped/")
    expect(alert).to_contain_text("order_id")


def wait_delivered(gateway: LiveGateway, notification_id: str, within: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within
    with gateway.http() as http:
        while True:
            status: dict[str, Any] = http.get(f"/v1/notifications/{notification_id}").json()
            states = {d["channel"]: d["status"] for d in status["deliveries"]}
            if states.get("email") == "delivered":
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"not delivered within {within}s: {states}")
            time.sleep(0.2)


def test_finds_a_posted_notification_and_its_delivered_attempt(page: Page, live_gateway: LiveGateway) -> None:
    user = {
        "user_id": "u_activity",
        "timezone": "Europe/Paris",
        "quiet_hours": {"start": "00:00", "end": "00:00"},
        "contacts": {"email": "act@example.com", "devices": [{"platform": "ios", "token": "act-tok-1"}]},
    }
    with live_gateway.http() as http:
        assert http.put("/v1/users/u_activity", json=user).status_code in (200, 201)
        accepted = http.post(
            "/v1/intents",
            json={
                "event": "order.shipped",
                "user_id": "u_activity",
                "data": {"order_id": "B-7", "carrier": "DHL"},
            },
        )
    assert accepted.status_code == 202, accepted.text
    notification_id = accepted.json()["notification_id"]
    wait_delivered(live_gateway, notification_id)

    sign_in(page, live_gateway.admin_key, "/console/#/activity")
    page.get_by_label("User id").fill("u_activity")
    page.get_by_role("button", name="Recent notifications").click()
    page.get_by_role("link", name=f"Open {notification_id}").click()

    email = page.get_by_role("region", name="email delivery")
    expect(email.locator(".badge").first).to_have_text("delivered")
    attempt = email.locator("li.entry.attempt")
    expect(attempt).to_contain_text("sendgrid: delivered")
    expect(email.locator("li.entry.accepted")).to_contain_text("order.shipped accepted")
    expect(page.get_by_role("region", name="push delivery")).to_contain_text("delivered")
    print("screenshot:", screenshot(page, "activity"))


def test_the_policy_page_lists_rules_in_precedence_with_their_lines(
    page: Page, live_gateway: LiveGateway
) -> None:
    sign_in(page, live_gateway.admin_key, "/console/#/policy")
    expect(page.get_by_role("heading", name="Category marketing")).to_be_visible()
    rules = page.locator("section", has=page.get_by_role("heading", name="Category marketing")).locator(
        "li.rule h3"
    )
    expect(rules).to_have_text(
        [
            "weekly-digest policies/marketing.yaml:29",
            "promotions policies/marketing.yaml:35",
        ]
    )
    tiers = page.get_by_role("region", name="Tiers")
    expect(tiers).to_contain_text("critical")
    expect(tiers).to_contain_text("bulk")
    expect(page.get_by_role("region", name="Schedules")).to_contain_text("0 9 * * 1")
    print("screenshot:", screenshot(page, "policy"))


def test_the_health_page_shows_queues_and_breakers(page: Page, live_gateway: LiveGateway) -> None:
    sign_in(page, live_gateway.admin_key, "/console/#/health")
    queues = page.get_by_role("region", name="Queues")
    for queue in ("critical", "standard", "bulk"):
        expect(queues).to_contain_text(queue)
    providers = page.get_by_role("region", name="Providers")
    expect(providers).to_contain_text("sendgrid")
    expect(providers.get_by_text("closed").first).to_be_visible()
    expect(page.get_by_text("answering")).to_be_visible()
    print("screenshot:", screenshot(page, "health"))


def test_works_from_the_keyboard(page: Page, live_gateway: LiveGateway) -> None:
    page.goto("/console/")
    # The key field has the focus on arrival; Enter signs in.
    page.keyboard.type(live_gateway.admin_key)
    page.keyboard.press("Enter")
    expect(page.get_by_text("Signed in:")).to_be_visible()
    # Tab from the top of a fresh load: the skip link first, then the pages.
    page.reload()
    page.get_by_role("button", name="Explain").wait_for()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    names = []
    for _ in range(5):
        page.keyboard.press("Tab")
        names.append(page.evaluate("document.activeElement.textContent"))
    assert names == ["Why?", "Preview", "Policy", "Activity", "Health"]
    page.keyboard.press("Enter")  # on Health
    expect(page.get_by_role("heading", name="Health", level=1)).to_be_focused()
    expect(page.get_by_role("link", name="Health")).to_have_attribute("aria-current", "page")
    # Every form control has an accessible name.
    page.goto("/console/#/why")
    page.get_by_role("button", name="Explain").wait_for()
    unnamed = page.evaluate(
        """[...document.querySelectorAll('input, select, textarea, button')]
             .filter((el) => !el.labels?.length && !el.getAttribute('aria-label') && !el.textContent.trim())
             .map((el) => el.outerHTML)"""
    )
    assert unnamed == []


def test_the_content_security_policy_stops_inline_scripts(page: Page, live_gateway: LiveGateway) -> None:
    response = page.goto("/console/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert (
        "script-src 'self'" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    violations = page.evaluate(
        """() => new Promise((resolve) => {
             const seen = [];
             document.addEventListener('securitypolicyviolation', (e) => seen.push(e.violatedDirective));
             const script = document.createElement('script');
             script.textContent = 'window.__inline_ran = true';
             document.body.append(script);
             const img = document.createElement('img');
             img.setAttribute('src', 'data:image/gif;base64,R0lGODlhAQABAAAAACw=');
             img.setAttribute('onload', 'window.__handler_ran = true');
             document.body.append(img);
             setTimeout(() => resolve(seen), 300);
           })"""
    )
    assert page.evaluate("window.__inline_ran") is None
    assert page.evaluate("window.__handler_ran") is None
    assert any(v.startswith("script-src") for v in violations), violations


def test_reads_at_phone_width(page: Page, live_gateway: LiveGateway) -> None:
    page.set_viewport_size(PHONE)
    sign_in(page, live_gateway.admin_key, "/console/#/why")
    page.get_by_label("Event").select_option("security.otp")
    page.get_by_label("Priority").select_option("urgent")
    page.get_by_role("button", name="Explain").click()
    expect(page.get_by_role("heading", name="Trace, step by step")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    print("screenshot:", screenshot(page, "why-phone"))
    page.goto("/console/#/policy")
    expect(page.get_by_role("heading", name="Category security")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "policy-phone")


def test_an_admin_issued_console_link_signs_in_with_its_narrower_scope(
    page: Page, live_gateway: LiveGateway
) -> None:
    with live_gateway.http() as http:
        issued = http.post("/v1/console-links", json={"events": ["order.*"], "ttl_seconds": 3600})
    assert issued.status_code == 201, issued.text
    page.goto(issued.json()["path"])
    expect(page.get_by_text("Signed in: console-admin (events order.*; console link until")).to_be_visible()
    assert "#link=" not in page.url  # taken out of the address bar at once
    # The link may explain order.* only: anything else is refused by the API, and said so.
    page.get_by_label("Event").select_option("security.otp")
    page.get_by_role("button", name="Explain").click()
    expect(page.get_by_role("alert")).to_contain_text("Not allowed with this key")
    page.get_by_label("Event").select_option("order.shipped")
    page.get_by_role("button", name="Explain").click()
    expect(page.get_by_role("heading", name="Trace, step by step")).to_be_visible()


@pytest.mark.parametrize(
    ("wall", "zone", "instant"),
    [
        ("2026-11-21T23:30", "America/Los_Angeles", "2026-11-22T07:30:00Z"),
        ("2026-07-01T09:00", "Europe/Paris", "2026-07-01T07:00:00Z"),
        # 02:30 does not exist on 8 March 2026 in Los Angeles: the first instant after the gap
        # plus the half hour into it, as the engine's own arithmetic does.
        ("2026-03-08T02:30", "America/Los_Angeles", "2026-03-08T10:30:00Z"),
        # 01:30 happens twice on 1 November 2026: the first one.
        ("2026-11-01T01:30", "America/Los_Angeles", "2026-11-01T08:30:00Z"),
        ("2026-03-29T12:00", "Australia/Lord_Howe", "2026-03-29T01:00:00Z"),
    ],
)
def test_a_local_clock_time_in_a_zone_becomes_the_right_instant(
    page: Page, live_gateway: LiveGateway, wall: str, zone: str, instant: str
) -> None:
    page.goto("/console/")
    got = page.evaluate(
        "async ([wall, zone]) => (await import('/console/js/zones.js')).zonedToUtc(wall, zone)", [wall, zone]
    )
    assert got == instant
