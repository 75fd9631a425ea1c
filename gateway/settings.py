"""Settings from the environment, in one typed place (documented in docs/configuration.md).

Read explicitly with `Settings.from_env()`, never at import time, so tests and tools can
build settings for any environment without patching globals. Defaults work on a laptop:
SQLite under `var/`, Redis on localhost, the dev provider profile. An invalid value is an
error naming the variable and the value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, get_args

import msgspec

from gateway.bundle_paths import BundlePaths
from gateway.errors import ConfigError
from gateway.redact import Secret, mask_url
from gateway.webhook_urls import Network, parse_networks

ReloadMode = Literal["watch", "poll", "off"]  # how serve and worker notice a changed bundle
RELOAD_MODES: tuple[ReloadMode, ...] = get_args(ReloadMode)

# The runtimes `gateway.policy.cel` implements (its RUNTIME_NAMES), and `auto`; named here so
# this module imports nothing of the domain. tests/test_settings.py holds the two together.
CelRuntimeName = Literal["auto", "cel-expr-python", "cel-python"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    policies_dir: Path = Path("policies")
    templates_dir: Path | None = None
    providers_file: Path | None = None
    schemas_dir: Path | None = None
    cel_runtime: str = "auto"
    database_url: str = "sqlite+aiosqlite:///var/notigate.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "notigate"
    provider_profile: str = "dev"
    host: str = "127.0.0.1"
    port: int = 8080
    api_processes: int = 1  # `notigate serve` processes sharing the port (one event loop each)
    log_level: str = "INFO"
    max_body_bytes: int = 1_048_576
    max_bulk_bytes: int = 8_388_608
    max_data_bytes: int = 65_536
    job_timeout: float = 30.0  # seconds a queue job may run; also the lease on its deliveries
    worker_concurrency: int = 50  # jobs a worker runs at once, per queue
    relay_reconcile: float = 5.0  # seconds between the relay's checks for lost jobs and orphaned deliveries
    # Admission control (docs/configuration.md): past either backlog, `low` intents and bulk
    # requests are answered 429 while urgent and normal intake go on.
    shed_backlog: int = 20_000  # jobs due and waiting in any one queue
    shed_wait: float = 300.0  # seconds the oldest due job of any queue has waited
    shed_unexpanded: int = 500_000  # bulk recipients accepted and not yet expanded
    expand_backlog: int = 2_000  # jobs due in a queue above which workers pause bulk expansion
    inbox_secret: Secret | None = None  # signs inbox tokens; unset, the inbox API answers 503
    inbox_streams_per_user: int = 5  # live inbox streams one user may hold open per API process
    worker_metrics_port: int | None = None  # a worker's Prometheus port (on `host`); off when unset
    scheduler_interval: float = 30.0  # seconds between a worker's scheduler passes; 0: no scheduler
    # Delivery tracking (docs/tracking.md): where providers and mail clients reach us, and the
    # keys that prove a webhook is theirs; unset, that webhook answers 503.
    public_url: str | None = None  # the base URL providers call; default `http://{host}:{port}`
    sendgrid_webhook_public_key: str | None = None  # SendGrid's ECDSA verification key (base64 DER)
    twilio_auth_token: Secret | None = None  # the Twilio provider's own TWILIO_AUTH_TOKEN
    twilio_base_url: str = "https://api.twilio.com"  # where status callbacks' prices are read
    # What a text saying HELP is answered with (docs/tracking.md, inbound SMS).
    sms_help_text: str = "Reply STOP to stop these texts, START to get them again."
    unsubscribe_secret: Secret | None = None  # signs List-Unsubscribe links; unset, none are sent
    unsubscribe_mailto: str | None = None  # an address for `List-Unsubscribe: <mailto:...>`
    unsubscribe_exempt: tuple[str, ...] = ("transactional",)  # categories whose email has no link
    # Private networks users' webhook URLs may point into (gateway/webhook_urls.py); none by default.
    webhook_allowed_networks: tuple[Network, ...] = ()
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (the inbox)
    console_secret: Secret | None = None  # signs console links; unset, only API keys sign in
    policy_reload: ReloadMode = "watch"  # serve and worker reload the bundle on change: watch, poll or off

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, variable, parse in _VARIABLES:
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as exc:
                shown = "'***'" if parse in _SECRET_PARSERS else repr(raw)  # a secret never shows
                raise ConfigError(f"{variable}={shown} is not valid: {exc}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.cel_runtime not in get_args(CelRuntimeName):
            raise ConfigError(
                f"NOTIGATE_CEL_RUNTIME={settings.cel_runtime!r} is not valid: "
                f"choose {', '.join(get_args(CelRuntimeName))}"
            )
        return settings

    def describe(self) -> str:
        """What a process runs with, for its first log line; URLs masked, no secret shown."""
        return (
            f"provider profile {self.provider_profile}, database {mask_url(self.database_url)}, "
            f"Redis {mask_url(self.redis_url)} (key prefix {self.redis_prefix!r}), "
            f"policies {self.policies_dir}"
        )

    def public_base(self) -> str:
        """The base URL providers and mail clients call, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def bundle_paths(self) -> BundlePaths:
        return BundlePaths.for_policies(
            self.policies_dir,
            templates=self.templates_dir,
            providers=self.providers_file,
            schemas=self.schemas_dir,
        )


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError("a TCP port is between 1 and 65535")
    return port


def _positive(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _seconds(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _seconds_or_off(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError("must be a number of seconds, or 0 to turn it off")
    return value


def _inbox_secret(raw: str) -> Secret:
    if len(raw) < 32:
        raise ValueError("an inbox secret is 32 characters or more (e.g. `openssl rand -hex 32`)")
    return Secret(raw)


def _secret(raw: str) -> Secret:
    if len(raw) < 32:
        raise ValueError("a signing secret is 32 characters or more (e.g. `openssl rand -hex 32`)")
    return Secret(raw)


def _token(raw: str) -> Secret:
    return Secret(raw.strip())


def _url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")) or "?" in raw or "#" in raw:
        raise ValueError("give a base URL such as https://notify.example.com (http or https, no query)")
    return raw.rstrip("/")


def _ecdsa_public_key(raw: str) -> str:
    from gateway.tracking.sendgrid import load_public_key  # the SDK's own loader

    load_public_key(raw)
    return raw.strip()


def _mailto(raw: str) -> str:
    if "@" not in raw or any(c in raw for c in "<>, \r\n"):
        raise ValueError("give one email address, such as unsubscribe@notify.example.com")
    return raw.removeprefix("mailto:")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _origins(raw: str) -> tuple[str, ...]:
    origins = _names(raw)
    for origin in origins:
        if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.count("/") != 2):
            raise ValueError(
                f"{origin!r} is not an origin: give scheme and host, e.g. https://app.example.com"
            )
    return origins


_SECRET_PARSERS: tuple[Callable[[str], object], ...] = (_inbox_secret, _secret, _token)


def _level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("choose DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _reload_mode(raw: str) -> ReloadMode:
    mode = raw.strip().lower()
    if mode not in RELOAD_MODES:
        raise ValueError("choose watch (file events), poll (network volumes) or off (SIGHUP only)")
    return mode


# (field, environment variable, parser); docs/configuration.md lists the same table.
_VARIABLES: tuple[tuple[str, str, Callable[[str], object]], ...] = (
    ("policies_dir", "NOTIGATE_POLICIES", Path),
    ("templates_dir", "NOTIGATE_TEMPLATES", Path),
    ("providers_file", "NOTIGATE_PROVIDERS", Path),
    ("schemas_dir", "NOTIGATE_SCHEMAS", Path),
    ("cel_runtime", "NOTIGATE_CEL_RUNTIME", str),
    ("database_url", "DATABASE_URL", str),
    ("redis_url", "REDIS_URL", str),
    ("redis_prefix", "NOTIGATE_REDIS_PREFIX", str),
    ("provider_profile", "NOTIGATE_PROVIDER_PROFILE", str),
    ("host", "NOTIGATE_HOST", str),
    ("port", "NOTIGATE_PORT", _port),
    ("api_processes", "NOTIGATE_API_PROCESSES", _positive),
    ("log_level", "NOTIGATE_LOG_LEVEL", _level),
    ("max_body_bytes", "NOTIGATE_MAX_BODY_BYTES", _positive),
    ("max_bulk_bytes", "NOTIGATE_MAX_BULK_BYTES", _positive),
    ("max_data_bytes", "NOTIGATE_MAX_DATA_BYTES", _positive),
    ("job_timeout", "NOTIGATE_JOB_TIMEOUT", _seconds),
    ("worker_concurrency", "NOTIGATE_WORKER_CONCURRENCY", _positive),
    ("relay_reconcile", "NOTIGATE_RELAY_RECONCILE", _seconds),
    ("shed_backlog", "NOTIGATE_SHED_BACKLOG", _positive),
    ("shed_wait", "NOTIGATE_SHED_WAIT", _seconds),
    ("shed_unexpanded", "NOTIGATE_SHED_UNEXPANDED", _positive),
    ("expand_backlog", "NOTIGATE_EXPAND_BACKLOG", _positive),
    ("inbox_secret", "NOTIGATE_INBOX_SECRET", _inbox_secret),
    ("inbox_streams_per_user", "NOTIGATE_INBOX_STREAMS_PER_USER", _positive),
    ("worker_metrics_port", "NOTIGATE_WORKER_METRICS_PORT", _port),
    ("scheduler_interval", "NOTIGATE_SCHEDULER_INTERVAL", _seconds_or_off),
    ("public_url", "NOTIGATE_PUBLIC_URL", _url),
    ("sendgrid_webhook_public_key", "NOTIGATE_SENDGRID_WEBHOOK_PUBLIC_KEY", _ecdsa_public_key),
    ("twilio_auth_token", "TWILIO_AUTH_TOKEN", _token),
    ("twilio_base_url", "TWILIO_BASE_URL", _url),
    ("sms_help_text", "NOTIGATE_SMS_HELP_TEXT", str),
    ("unsubscribe_secret", "NOTIGATE_UNSUBSCRIBE_SECRET", _secret),
    ("unsubscribe_mailto", "NOTIGATE_UNSUBSCRIBE_MAILTO", _mailto),
    ("unsubscribe_exempt", "NOTIGATE_UNSUBSCRIBE_EXEMPT", _names),
    ("cors_origins", "NOTIGATE_CORS_ORIGINS", _origins),
    ("webhook_allowed_networks", "NOTIGATE_WEBHOOK_ALLOWED_NETWORKS", parse_networks),
    ("console_secret", "NOTIGATE_CONSOLE_SECRET", _secret),
    ("policy_reload", "NOTIGATE_POLICY_RELOAD", _reload_mode),
)
