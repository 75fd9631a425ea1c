"""The adapters' settings declarations: a leaf that `notigate check` reads without any SDK."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.errors import ConfigError
from gateway.providers import settings as declared
from gateway.providers.registry import LIVE_ADAPTERS
from gateway.providers.spec import ProviderSpec

SDKS = ("twilio", "firebase_admin", "sendgrid", "aiosmtplib", "httpx", "aiohttp", "jwt")


def test_the_checker_of_providers_yaml_imports_no_provider_sdk() -> None:
    """Checking providers.yaml (a CI job, a git hook) must not need firebase-admin or twilio,
    nor pay their start-up time: the declarations import msgspec and nothing of the domain."""
    code = (
        "import sys, gateway.policy.provider_settings;print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = done.stdout
    assert [sdk for sdk in SDKS if f"'{sdk}'" in loaded] == []
    leaf = (
        "import sys, gateway.providers.settings;"
        "print(sorted(m for m in sys.modules if m.startswith('gateway.')))"
    )
    done = subprocess.run([sys.executable, "-c", leaf], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['gateway.providers', 'gateway.providers.settings']"


def test_every_live_adapter_declares_the_settings_it_is_decoded_with() -> None:
    """The registry's classes and the checker's declarations are one table, not two."""
    for kind, load in LIVE_ADAPTERS.items():
        adapter = load()
        assert declared.SETTINGS[kind] is adapter.settings
        assert adapter.secrets == adapter.settings.credentials


def test_a_value_of_the_wrong_type_names_the_variable_it_came_from() -> None:
    raw = {
        "channel": "email",
        "adapter": "smtp",
        "cost": 0,
        "settings": {"keepalive": {"env": "SMTP_KEEPALIVE"}},
    }
    spec = ProviderSpec.parse("smtp", raw, {"SMTP_KEEPALIVE": "forever"})
    with pytest.raises(ConfigError, match=r"settings\.keepalive \(SMTP_KEEPALIVE\)='forever' is not valid"):
        spec.typed(declared.SmtpSettings)
