"""Adapters by provider name, built from `providers.yaml` and the active profile.

A profile swaps every provider's transport at once: `dev` (the run command's default)
writes what would be sent to files and needs no credentials; `live` uses each provider's
own adapter with credentials from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.policy.source import load_yaml
from gateway.providers.base import Adapter
from gateway.providers.console import ConsoleAdapter
from gateway.providers.webhook import WebhookAdapter
from gateway.redact import Secret
from gateway.timeutil import parse_duration


def setting(value: Any, environ: Mapping[str, str]) -> Any:
    """A settings value: a literal, or {env: NAME, default: ...} read from the environment."""
    if isinstance(value, dict) and "env" in value:
        return environ.get(value["env"], value.get("default"))
    return value


class ProviderRegistry:
    def __init__(self, adapters: Mapping[str, Adapter], profile: str) -> None:
        self.adapters = dict(adapters)
        self.profile = profile

    def get(self, name: str) -> Adapter | None:
        return self.adapters.get(name)

    def idempotent(self, names: list[str]) -> bool:
        return all(self.adapters[n].idempotent for n in names if n in self.adapters)

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.close()

    @classmethod
    def load(
        cls,
        providers_file: Path,
        profile: str,
        environ: Mapping[str, str] | None = None,
        base: Path | None = None,
    ) -> ProviderRegistry:
        env = os.environ if environ is None else environ
        data = load_yaml(providers_file).data
        profiles = data.get("profiles", {})
        adapters: dict[str, Adapter] = {}
        if profile in profiles:
            spec = profiles[profile]
            settings = {k: setting(v, env) for k, v in spec.get("settings", {}).items()}
            directory = Path(settings.get("directory", "var/outbox"))
            if not directory.is_absolute() and base is not None:
                directory = base / directory
            for name, provider in data["providers"].items():
                adapters[name] = _profile_adapter(spec["adapter"], name, provider["channel"], directory)
            return cls(adapters, profile)
        if profile != "live":
            choices = ", ".join(["live", *profiles])
            raise ConfigError(f"NOTIGATE_PROVIDER_PROFILE={profile!r} is not valid: choose {choices}")
        for name, provider in data["providers"].items():
            adapters[name] = _live_adapter(name, provider, env)
        return cls(adapters, profile)


def _profile_adapter(kind: str, name: str, channel: str, directory: Path) -> Adapter:
    if kind in ("console", "devfile"):
        return ConsoleAdapter(name, channel, directory)
    raise ConfigError(f"profile adapter {kind!r} is not available")


def credential(provider: str, spec: Mapping[str, Any], name: str, environ: Mapping[str, str]) -> Secret:
    """A credential from the environment variable providers.yaml names; its value never appears in errors."""
    variable = spec.get("credentials", {}).get(name)
    if variable is None:
        raise ConfigError(f"provider {provider!r} needs credentials.{name} in providers.yaml")
    value = environ.get(variable)
    if not value:
        raise ConfigError(
            f"provider {provider!r} needs the environment variable {variable} ({name}); it is not set"
        )
    return Secret(value)


def _live_adapter(name: str, provider: Mapping[str, Any], environ: Mapping[str, str]) -> Adapter:
    settings = {k: setting(v, environ) for k, v in provider.get("settings", {}).items()}
    timeout = parse_duration(provider.get("timeout", "10s")).total_seconds()
    kind = provider["adapter"]
    if kind == "webhook":
        return WebhookAdapter(
            name,
            provider["channel"],
            signing_secret=credential(name, provider, "signing_secret", environ),
            url=settings.get("url"),
            timeout=timeout,
        )
    raise ConfigError(
        f"provider {name!r} ({kind}) has no live adapter in this version; "
        "run with NOTIGATE_PROVIDER_PROFILE=dev"
    )
