"""One provider's entry of `providers.yaml`, resolved against the environment.

Adapters are built from a `ProviderSpec` (`Adapter.from_spec`), never from raw YAML, so
each reads its settings and credentials the same way: settings are literals or
`{env: NAME, default: ...}`; credentials are only ever the *names* of environment
variables, and a missing one is an error naming the variable, never showing a value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gateway.errors import ConfigError
from gateway.providers import settings as declared
from gateway.redact import Secret
from gateway.timeutil import parse_duration

S = TypeVar("S", bound=declared.ProviderSettings)


def setting(value: Any, environ: Mapping[str, str]) -> Any:
    """A settings value: a literal, or {env: NAME, default: ...} read from the environment (an
    empty variable counts as unset)."""
    if isinstance(value, dict) and "env" in value:
        # An empty variable is unset, as in gateway.settings: `FCM_BASE_URL=` means the default.
        return environ.get(value["env"]) or value.get("default")
    return value


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `rate` tokens every `per`, holding at most `burst`."""

    rate: int
    per: dt.timedelta
    burst: int

    @property
    def per_second(self) -> float:
        return self.rate / self.per.total_seconds()


@dataclass(frozen=True)
class BreakerPolicy:
    """Open the circuit when at least `min_calls` calls in `window` failed at `failure_rate` or
    more; stay open `open_for`, then let one trial call through (half-open)."""

    failure_rate: float = 0.5
    min_calls: int = 20
    window: dt.timedelta = dt.timedelta(seconds=60)
    open_for: dt.timedelta = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    channel: str
    adapter: str
    cost: float
    timeout: float
    platforms: tuple[str, ...] = ()
    rate_limit: RateLimit | None = None
    breaker: BreakerPolicy | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    credential_vars: Mapping[str, str] = field(default_factory=dict)
    setting_vars: Mapping[str, str] = field(default_factory=dict)  # setting -> the variable it reads
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, name: str, raw: Mapping[str, Any], environ: Mapping[str, str]) -> ProviderSpec:
        limit = raw.get("rate_limit")
        breaker = raw.get("circuit_breaker")
        return cls(
            name=name,
            channel=raw["channel"],
            adapter=raw["adapter"],
            cost=float(raw.get("cost", 0)),
            timeout=parse_duration(raw.get("timeout", "10s")).total_seconds(),
            platforms=tuple(raw.get("platforms", ())),
            rate_limit=RateLimit(
                rate=limit["rate"],
                per=parse_duration(limit["per"]),
                burst=limit.get("burst", limit["rate"]),
            )
            if limit
            else None,
            breaker=BreakerPolicy(
                failure_rate=breaker.get("failure_rate", 0.5),
                min_calls=breaker.get("min_calls", 20),
                window=parse_duration(breaker.get("window", "60s")),
                open_for=parse_duration(breaker.get("open_for", "30s")),
            )
            if breaker is not None
            else None,
            settings={k: setting(v, environ) for k, v in raw.get("settings", {}).items()},
            credential_vars=dict(raw.get("credentials", {})),
            setting_vars={
                k: v["env"] for k, v in raw.get("settings", {}).items() if isinstance(v, dict) and "env" in v
            },
            environ=environ,
        )

    def setting(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key)
        return default if value is None else value

    def typed(self, kind: type[S]) -> S:
        """The settings as the adapter declares them (`gateway.providers.settings`); a
        ConfigError names every problem and the variable each setting is read from."""
        try:
            return declared.decode(kind, self.settings)
        except declared.SettingsError as exc:
            said = [self._where(p) for p in exc.problems]
            raise ConfigError(f"provider {self.name!r}: {'; '.join(said)}") from None

    def _where(self, problem: declared.SettingProblem) -> str:
        """A problem's message with the setting's variable beside its name."""
        named = f"settings.{problem.key}"
        return problem.message.replace(named, self.describe_setting(problem.key), 1)

    def describe_setting(self, key: str) -> str:
        """`settings.from (TWILIO_FROM_NUMBER)`: where an operator sets it, for error messages."""
        variable = self.setting_vars.get(key)
        return f"settings.{key} ({variable})" if variable else f"settings.{key}"

    def credential(self, key: str) -> Secret:
        """The credential `key` from the environment variable providers.yaml names for it."""
        variable = self.credential_vars.get(key)
        if variable is None:
            raise ConfigError(f"provider {self.name!r} needs credentials.{key} in providers.yaml")
        value = self.environ.get(variable)
        if not value:
            raise ConfigError(
                f"provider {self.name!r} needs the environment variable {variable} ({key}); it is not set"
            )
        return Secret(value)
