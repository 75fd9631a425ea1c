"""The console in a real headless Chromium against a live gateway (API and worker running).

Each test signs in as a person would, works the page with the keyboard or the mouse, and
reads what the page shows; screenshots of every page land in var/screenshots/.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.console.conftest import LiveGateway, screenshot, sign_in

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

    # The rule's link opens the policy file at its line.
    email.get_by_role("link", name="policies/marketing.yaml:29").click()
    expect(page.get_by_role("heading", name="Policy file")).to_be_visible()
    hit = page.locator("ol.source li.hit")
    expect(hit).to_have_attribute("id", "L29")
    expect(hit).to_contain_text("- name: weekly-digest")
    screenshot(page, "policy-file")
