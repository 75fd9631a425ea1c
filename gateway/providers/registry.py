"""Adapters by provider name, built from `providers.yaml` and the active profile.

A profile swaps every provider's transport at once: `dev` (the run command's default)
writes what would be sent to files and needs no credentials; `live` uses each provider's
own adapter with credentials from the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from gateway.errors import ConfigError
from gateway.policy.source import load_yaml
from gateway.providers import settings as declared
from gateway.providers.base import Adapter, AdapterClass, AdapterDeps
from gateway.providers.console import ConsoleAdapter
from gateway.providers.spec import ProviderSpec, setting


# Each adapter class is imported only when a provider uses it: firebase-admin alone costs
# half a second at startup, and a deployment without push should not pay it. Each loader's
# return type makes mypy hold the class to the `AdapterClass` contract.
def _webhook() -> AdapterClass:
    from gateway.providers.webhook import WebhookAdapter

    return WebhookAdapter


def _twilio() -> AdapterClass:
    from gateway.providers.twilio_sms import TwilioAdapter

    return TwilioAdapter


def _sendgrid() -> AdapterClass:
    from gateway.providers.sendgrid_email import SendGridAdapter

    return SendGridAdapter


def _smtp() -> AdapterClass:
    from gateway.providers.smtp_email import SmtpAdapter

    return SmtpAdapter


def _fcm() -> AdapterClass:
    from gateway.providers.fcm_push import FcmAdapter

    return FcmAdapter


def _apns() -> AdapterClass:
    from gateway.providers.apns_push import ApnsAdapter

    return ApnsAdapter


def _inbox() -> AdapterClass:
    from gateway.providers.inbox import InboxAdapter

    return InboxAdapter


# Adapter kind -> the loader of its class.
LIVE_ADAPTERS: Final[Mapping[str, Callable[[], AdapterClass]]] = {
    "webhook": _webhook,
    "twilio": _twilio,
    "sendgrid": _sendgrid,
    "smtp": _smtp,
    "fcm": _fcm,
    "apns": _apns,
    "inbox": _inbox,
}
# Adapters that write to our own systems rather than to an outside provider.
INTERNAL_ADAPTERS = frozenset({"inbox"})

log = logging.getLogger("gateway.providers")


class ProviderRegistry:
    def __init__(
        self, adapters: Mapping[str, Adapter], profile: str, specs: Mapping[str, ProviderSpec] | None = None
    ) -> None:
        self.adapters = dict(adapters)
        self.profile = profile
        self.specs = dict(specs or {})

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
        deps: AdapterDeps | None = None,
    ) -> ProviderRegistry:
        """The adapters `profile` asks for; `live` builds every provider's own adapter.

        In-app messages go to our own store whatever the profile: there is no outside
        transport to stand in for, and the inbox a newcomer reads must hold them.
        """
        env = os.environ if environ is None else environ
        data = load_yaml(providers_file).data
        profiles = data.get("profiles", {})
        if profile != "live" and profile not in profiles:
            choices = ", ".join(["live", *profiles])
            raise ConfigError(f"NOTIGATE_PROVIDER_PROFILE={profile!r} is not valid: choose {choices}")
        deps = deps or AdapterDeps()
        specs = {name: ProviderSpec.parse(name, raw, env) for name, raw in data["providers"].items()}
        adapters: dict[str, Adapter] = {}
        left_out: dict[str, list[str]] = {}
        problems: list[str] = []  # every missing credential at once, not one per restart
        for name, spec in specs.items():
            try:
                unset = _unset_credentials(spec) if profile == "live" else []
                if unset and len(unset) == len(spec.credential_vars):
                    left_out[name] = unset
                elif unset:
                    problems.append(
                        f"provider {name!r} is partly configured: set {', '.join(unset)} as well "
                        "(or none of its credentials, to leave it out)"
                    )
                elif profile == "live" or (spec.adapter in INTERNAL_ADAPTERS and deps.database is not None):
                    adapters[name] = _live_adapter(spec, deps)
                else:
                    adapters[name] = _profile_adapter(profiles[profile], spec, env, base)
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))
        if left_out:
            _warn_left_out(left_out, data.get("routes", {}), adapters)
        return cls(adapters, profile, specs)


def _unset_credentials(spec: ProviderSpec) -> list[str]:
    """The provider's credential variables that are unset.

    All of them unset: the operator does not use it, and it is left out of its chains (the
    pipeline skips it as `not configured`), so a deployment runs with the providers it has.
    Some set and others not is a mistake that stops the worker, naming every one missing.
    SMTP sends without AUTH when it has no credentials, so its adapter judges them itself.
    """
    kind = declared.SETTINGS.get(spec.adapter)
    if kind is not None and kind.optional_credentials:
        return []
    return [variable for variable in spec.credential_vars.values() if not spec.environ.get(variable)]


def _warn_left_out(
    left_out: Mapping[str, list[str]], routes: Mapping[str, list[str]], adapters: Mapping[str, Adapter]
) -> None:
    named = "; ".join(f"{name} (set {', '.join(unset)})" for name, unset in left_out.items())
    log.warning("providers left out of their chains, their credentials unset: %s", named)
    for channel, chain in routes.items():
        if chain and not any(name in adapters for name in chain):
            chained = ", ".join(chain)
            log.warning("channel %s has no configured provider (%s): its sends will fail", channel, chained)


def _profile_adapter(
    profile: Mapping[str, Any], spec: ProviderSpec, environ: Mapping[str, str], base: Path | None
) -> Adapter:
    kind = profile["adapter"]
    if kind not in declared.PROFILE_ADAPTERS:
        raise ConfigError(f"profile adapter {kind!r} is not available")
    values = {k: setting(v, environ) for k, v in profile.get("settings", {}).items()}
    try:
        settings = declared.decode(declared.OutboxSettings, values)
    except declared.SettingsError as exc:
        raise ConfigError(f"profile adapter {kind!r}: {exc}") from None
    directory = Path(settings.directory)
    if not directory.is_absolute() and base is not None:
        directory = base / directory
    sender = spec.setting("from", declared.DEFAULT_SENDER)
    return ConsoleAdapter(spec.name, spec.channel, directory, sender=sender)


def _live_adapter(spec: ProviderSpec, deps: AdapterDeps) -> Adapter:
    load = LIVE_ADAPTERS.get(spec.adapter)
    if load is None:
        raise ConfigError(
            f"provider {spec.name!r} uses adapter {spec.adapter!r}, which has no live implementation; "
            f"choose one of {', '.join(sorted(LIVE_ADAPTERS))}"
        )
    return load().from_spec(spec, deps)
