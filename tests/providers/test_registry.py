"""Building adapters from providers.yaml: profiles, credentials from the environment."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.providers.apns_push import ApnsAdapter
from gateway.providers.base import AdapterDeps
from gateway.providers.console import ConsoleAdapter
from gateway.providers.registry import ProviderRegistry
from gateway.providers.smtp_email import SmtpAdapter
from gateway.store.database import Database
from tests.conftest import REPO
from tests.providers import wire_apns, wire_fcm, wire_sendgrid, wire_twilio

PROVIDERS = REPO / "providers.yaml"


# What every required provider of the live profile needs.
LIVE_ENVIRON = {
    "TWILIO_ACCOUNT_SID": wire_twilio.ACCOUNT_SID,
    "TWILIO_AUTH_TOKEN": wire_twilio.AUTH_TOKEN,
    "TWILIO_FROM_NUMBER": wire_twilio.SENDER,
    "SENDGRID_API_KEY": wire_sendgrid.API_KEY,
    "FIREBASE_SERVICE_ACCOUNT_JSON": json.dumps(wire_fcm.service_account("http://127.0.0.1:9/token")),
    "WEBHOOK_SIGNING_SECRET": "whsec-1",
}


def test_live_names_every_problem_at_once_and_no_value() -> None:
    with pytest.raises(ConfigError) as caught:
        ProviderRegistry.load(
            PROVIDERS, "live", {"SMTP_PASSWORD": "hunter2-secret", "TWILIO_ACCOUNT_SID": "AC123"}
        )
    message = str(caught.value)
    assert "'twilio' is partly configured: set TWILIO_AUTH_TOKEN" in message
    assert "SMTP_USERNAME" in message  # SMTP's password without its user
    assert "hunter2-secret" not in message and "AC123" not in message


async def test_live_leaves_out_providers_with_no_credentials_and_says_so(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(sqlite_url)
    with caplog.at_level(logging.WARNING, logger="gateway.providers"):
        registry = ProviderRegistry.load(
            PROVIDERS,
            "live",
            {"SENDGRID_API_KEY": wire_sendgrid.API_KEY},
            deps=AdapterDeps(database=database),
        )
    try:
        assert sorted(registry.adapters) == ["inbox", "sendgrid", "smtp"]
        left_out = next(r.getMessage() for r in caplog.records if "left out" in r.getMessage())
        for variable in (
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "FIREBASE_SERVICE_ACCOUNT_JSON",
            "WEBHOOK_SIGNING_SECRET",
        ):
            assert variable in left_out  # all in one line, not one per restart
        unserved = {r.args[0] for r in caplog.records if "no configured provider" in r.msg}  # type: ignore[index]
        assert unserved == {"sms", "push", "webhook"}
    finally:
        await registry.close()
        await database.dispose()


def test_dev_writes_files_for_every_outside_provider(tmp_path: Path) -> None:
    registry = ProviderRegistry.load(PROVIDERS, "dev", {"NOTIGATE_OUTBOX": str(tmp_path)})
    assert {name: type(a) for name, a in registry.adapters.items()} == dict.fromkeys(
        ["twilio", "sendgrid", "smtp", "fcm", "apns", "inbox", "webhook"], ConsoleAdapter
    )
    assert all(a.directory == tmp_path for a in registry.adapters.values())  # type: ignore[attr-defined]
    assert registry.specs["twilio"].cost == 0.0075 and registry.specs["twilio"].rate_limit is not None


async def test_live_builds_each_providers_own_adapter_from_the_environment(sqlite_url: str) -> None:
    environ = {
        **LIVE_ENVIRON,
        "SMTP_HOST": "relay.internal",
        "SMTP_PORT": "2525",
    }
    database = Database(sqlite_url)
    registry = ProviderRegistry.load(PROVIDERS, "live", environ, deps=AdapterDeps(database=database))
    try:
        kinds = {name: type(a).__name__ for name, a in registry.adapters.items()}
        assert kinds == {
            "twilio": "TwilioAdapter",
            "sendgrid": "SendGridAdapter",
            "smtp": "SmtpAdapter",
            "fcm": "FcmAdapter",
            "inbox": "InboxAdapter",
            "webhook": "WebhookAdapter",
        }  # no APNS_AUTH_KEY: the optional apns provider is left out, not an error
        smtp = registry.adapters["smtp"]
        assert isinstance(smtp, SmtpAdapter) and (smtp.host, smtp.port) == ("relay.internal", 2525)
    finally:
        await registry.close()
        await database.dispose()


def test_an_unknown_profile_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="choose live, dev"):
        ProviderRegistry.load(PROVIDERS, "staging", {})


async def test_the_optional_apns_provider_runs_once_its_key_is_set_and_names_what_else_it_needs(
    sqlite_url: str,
) -> None:
    environ = {**LIVE_ENVIRON, **wire_apns.ENVIRON}
    database = Database(sqlite_url)
    deps = AdapterDeps(database=database)
    with pytest.raises(ConfigError) as caught:  # the key alone: the rest is named, the key is not shown
        ProviderRegistry.load(PROVIDERS, "live", environ, deps=deps)
    assert "APNS_KEY_ID" in str(caught.value) and "APNS_TOPIC" in str(caught.value)
    assert wire_apns.AUTH_KEY.splitlines()[1] not in str(caught.value)
    settings = {
        "APNS_KEY_ID": wire_apns.KEY_ID,
        "APNS_TEAM_ID": wire_apns.TEAM_ID,
        "APNS_TOPIC": wire_apns.TOPIC,
    }
    registry = ProviderRegistry.load(PROVIDERS, "live", {**environ, **settings}, deps=deps)
    try:
        apns = registry.adapters["apns"]
        assert isinstance(apns, ApnsAdapter) and apns.topic == wire_apns.TOPIC
        assert apns.base_url == "https://api.push.apple.com"
    finally:
        await registry.close()
        await database.dispose()


def test_live_checks_what_the_variables_hold_against_the_same_declarations_as_check() -> None:
    """What `notigate check` cannot see (a variable's value) is checked at start by the same
    declarations, each problem naming the variable to fix."""
    environ = {**LIVE_ENVIRON, "SMTP_PORT": "twenty-five", "SMTP_STARTTLS": "perhaps"}
    del environ["TWILIO_FROM_NUMBER"]
    with pytest.raises(ConfigError) as caught:
        ProviderRegistry.load(PROVIDERS, "live", environ)
    message = str(caught.value)
    assert "provider 'twilio': settings.from (TWILIO_FROM_NUMBER) is required: the Twilio number" in message
    assert "settings.port (SMTP_PORT)='twenty-five' is not valid: Expected `int`" in message
    assert "settings.starttls (SMTP_STARTTLS)='perhaps' is not valid: Expected `bool`" in message
