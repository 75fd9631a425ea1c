"""Settings come from the environment, with laptop defaults and errors that name the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from gateway.errors import ConfigError
from gateway.policy.cel import RUNTIME_NAMES
from gateway.settings import CelRuntimeName, Settings


def test_defaults_work_on_a_laptop() -> None:
    settings = Settings.from_env({})
    assert settings.policies_dir == Path("policies")
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.cel_runtime == "auto"


def test_variables_override_defaults() -> None:
    settings = Settings.from_env(
        {
            "NOTIGATE_POLICIES": "/srv/policies",
            "NOTIGATE_PORT": "9000",
            "DATABASE_URL": "postgresql+asyncpg://db/notigate",
            "NOTIGATE_LOG_LEVEL": "debug",
        }
    )
    assert (settings.policies_dir, settings.port, settings.log_level) == (
        Path("/srv/policies"),
        9000,
        "DEBUG",
    )
    assert settings.database_url == "postgresql+asyncpg://db/notigate"


@pytest.mark.parametrize(
    ("variable", "value", "hint"),
    [
        ("NOTIGATE_PORT", "eighty", "NOTIGATE_PORT='eighty'"),
        ("NOTIGATE_PORT", "70000", "between 1 and 65535"),
        ("NOTIGATE_LOG_LEVEL", "loud", "choose DEBUG"),
        ("NOTIGATE_CEL_RUNTIME", "fast", "choose auto"),
    ],
)
def test_an_invalid_value_names_the_variable_and_the_value(variable: str, value: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=hint) as raised:
        Settings.from_env({variable: value})
    assert variable in str(raised.value)


def test_describe_says_what_a_process_runs_with_and_masks_passwords() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql+asyncpg://notigate:pg-s3cret@db:5432/notigate",
            "REDIS_URL": "redis://:redis-s3cret@cache:6379/0",
            "NOTIGATE_PROVIDER_PROFILE": "live",
        }
    )
    described = settings.describe()
    assert "provider profile live" in described
    assert "postgresql+asyncpg://notigate:***@db:5432/notigate" in described
    assert "redis://:***@cache:6379/0" in described
    assert "s3cret" not in described
    assert "sqlite+aiosqlite:///var/notigate.db" in Settings().describe()  # nothing to mask


def test_settings_name_the_cel_runtimes_the_seam_implements() -> None:
    """settings.py is a leaf: it spells the runtime names itself, and they must not drift."""
    assert set(get_args(CelRuntimeName)) == {"auto", *RUNTIME_NAMES}


def test_settings_import_nothing_of_the_domain() -> None:
    """The one import cycle ran through settings -> policy compiler -> ... -> tracking -> settings.
    What it imports are leaves too (webhook_urls parses the allowed networks, standard library only)."""
    code = "import sys, gateway.settings; print(sorted(m for m in sys.modules if m.startswith('gateway.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    leaves = ["bundle_paths", "errors", "redact", "settings", "webhook_urls"]
    assert done.stdout.strip() == str([f"gateway.{name}" for name in leaves])
