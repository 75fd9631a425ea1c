"""Each adapter kind's settings and credentials, declared without importing its SDK.

A leaf: `notigate check` (gateway/policy/compiler.py) validates `providers.yaml` against
these declarations before deploy, and each adapter's `from_spec` decodes its resolved
settings through the very same `decode`, so a setting the checker accepts is one the
worker can build from, and the checker needs neither firebase-admin nor twilio to say so.

A value in `providers.yaml` is a literal or `{env: NAME, default: ...}`. The checker holds
literals and defaults to the field's type; a variable without a default is only known at
start, where `decode` checks what it holds. Strings from the environment are converted as
an operator writes them: `"2525"` is a port, `"yes"`/`"off"` are booleans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar

import msgspec

DEFAULT_SENDER = "Notigate <no-reply@notigate.example>"
TWILIO_API = "https://api.twilio.com"
SENDGRID_API = "https://api.sendgrid.com"
FCM_API = "https://fcm.googleapis.com"
APNS_API = "https://api.push.apple.com"
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

# What a provider entry can get wrong, as `notigate check` reports it (gateway/policy/diagnostics.py).
SettingProblemCode = Literal[
    "unknown-provider-setting",
    "provider-setting-type",
    "missing-provider-setting",
    "unknown-credential",
    "missing-credential",
]


class ProviderSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The base of every adapter's settings; its class variables declare the credentials.

    `credentials` are the keys the `credentials:` map must name a variable for; SMTP's are
    `optional` (it sends without AUTH when both are unset).
    """

    credentials: ClassVar[tuple[str, ...]] = ()
    optional_credentials: ClassVar[bool] = False


SENDER_ID = "the Twilio number, short code or alphanumeric sender ID messages come from"
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class TwilioSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    credentials = ("account_sid", "auth_token")
    sender: Annotated[str, msgspec.Meta(description=SENDER_ID)] = msgspec.field(name="from")
    base_url: str = TWILIO_API
    status_callback: str | None = None


class SendGridSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    credentials = ("api_key",)
    sender: str = msgspec.field(name="from", default=DEFAULT_SENDER)
    base_url: str = SENDGRID_API


# How an SMTP session is encrypted: STARTTLS after the greeting (submission, port 587),
# TLS from the first byte (implicit TLS, "submissions", port 465, RFC 8314), or not at all.
TlsMode = Literal["starttls", "implicit", "none"]
IMPLICIT_TLS_PORT = 465


class SmtpSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    credentials = ("username", "password")
    optional_credentials = True
    host: str = "localhost"
    port: Port = 587
    tls: TlsMode | None = None  # unset: implicit on port 465, else as `starttls` says
    starttls: bool = True
    ca_file: str | None = None  # a PEM bundle to trust instead of the system's (a private relay)
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4  # kept sessions per worker
    keepalive: Annotated[float, msgspec.Meta(ge=0)] = 30.0  # seconds an idle session is reused; 0: never
    sender: str = msgspec.field(name="from", default=DEFAULT_SENDER)

    def tls_mode(self) -> TlsMode:
        if self.tls is not None:
            return self.tls
        if self.port == IMPLICIT_TLS_PORT:
            return "implicit"
        return "starttls" if self.starttls else "none"


class FcmSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    credentials = ("service_account",)
    project_id: str | None = None
    base_url: str = FCM_API


class ApnsSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    credentials = ("auth_key",)
    key_id: Annotated[str, msgspec.Meta(description="the .p8 key's 10-character id")]
    team_id: Annotated[str, msgspec.Meta(description="the developer team's 10-character id")]
    topic: Annotated[str, msgspec.Meta(description="the app's bundle id")]
    base_url: str = APNS_API


class WebhookSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    credentials = ("signing_secret",)
    url: str | None = None  # a fixed endpoint; else each user's webhook contact
    allowed_networks: str | None = None  # comma-separated networks a user's URL may resolve into


class InboxSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class OutboxSettings(ProviderSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A profile's file writer (`devfile`, `console`)."""

    directory: str = "var/outbox"


# The adapters a profile may swap every transport for (gateway/providers/console.py).
PROFILE_ADAPTERS = frozenset({"devfile", "console"})
# Adapter kind (the `adapter:` of providers.yaml) -> its settings.
SETTINGS: Final[Mapping[str, type[ProviderSettings]]] = {
    "twilio": TwilioSettings,
    "sendgrid": SendGridSettings,
    "smtp": SmtpSettings,
    "fcm": FcmSettings,
    "apns": ApnsSettings,
    "webhook": WebhookSettings,
    "inbox": InboxSettings,
    "devfile": OutboxSettings,
    "console": OutboxSettings,
}


S = TypeVar("S", bound=ProviderSettings)


class _Unresolved:
    """A value only the environment at start will give (`{env: NAME}` without a default)."""


UNRESOLVED: Final = _Unresolved()


@dataclass(frozen=True, slots=True)
class SettingProblem:
    """One thing wrong with a provider entry: the key it is about, and what is wrong."""

    section: Literal["settings", "credentials"]
    key: str
    code: SettingProblemCode
    message: str


class SettingsError(ValueError):
    def __init__(self, problems: list[SettingProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


def problems(kind: type[ProviderSettings], values: Mapping[str, Any]) -> list[SettingProblem]:
    """Every problem of `values` (a setting's key -> its value, or UNRESOLVED) for `kind`."""
    return _decoded(kind, values)[1]


def decode(kind: type[S], values: Mapping[str, Any]) -> S:
    """The typed settings; SettingsError names every problem. A None value counts as unset,
    as an `{env: NAME}` whose variable is empty does."""
    present = {key: value for key, value in values.items() if value is not None}
    converted, found = _decoded(kind, present)
    if found:
        raise SettingsError(found)
    return kind(**converted)


def credential_problems(kind: type[ProviderSettings], credentials: Mapping[str, Any]) -> list[SettingProblem]:
    """The `credentials:` map against the adapter's declared credentials."""
    found = [
        SettingProblem(
            "credentials",
            key,
            "unknown-credential",
            f"unknown credential {key!r}; {_choices(kind.credentials, 'takes no credentials')}",
        )
        for key in credentials
        if key not in kind.credentials
    ]
    if not kind.optional_credentials:
        found += [
            SettingProblem(
                "credentials",
                key,
                "missing-credential",
                f"credentials.{key} must name the environment variable that holds it",
            )
            for key in kind.credentials
            if key not in credentials
        ]
    return found


def _decoded(
    kind: type[ProviderSettings], values: Mapping[str, Any]
) -> tuple[dict[str, Any], list[SettingProblem]]:
    fields = {f.encode_name: f for f in msgspec.structs.fields(kind)}
    converted: dict[str, Any] = {}
    found: list[SettingProblem] = []
    for key, value in values.items():
        field = fields.get(key)
        if field is None:
            found.append(
                SettingProblem(
                    "settings",
                    key,
                    "unknown-provider-setting",
                    f"unknown setting {key!r}; {_choices(tuple(fields), 'takes no settings')}",
                )
            )
            continue
        if value is UNRESOLVED:
            continue
        try:
            converted[field.name] = _convert(value, field.type)
        except msgspec.ValidationError as exc:
            found.append(
                SettingProblem(
                    "settings",
                    key,
                    "provider-setting-type",
                    f"settings.{key}={value!r} is not valid: {str(exc).partition(' - at ')[0]}",
                )
            )
    for key, field in fields.items():
        if field.required and key not in values:
            about = _description(field.type)
            found.append(
                SettingProblem(
                    "settings", key, "missing-provider-setting", f"settings.{key} is required" + about
                )
            )
    return converted, found


def _convert(value: Any, annotation: Any) -> Any:
    if isinstance(value, str) and _is_bool(annotation):
        word = value.strip().lower()
        if word in TRUE_WORDS | FALSE_WORDS:
            return word in TRUE_WORDS
    return msgspec.convert(value, annotation, strict=False)


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _description(annotation: Any) -> str:
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, msgspec.Meta) and meta.description:
            return f": {meta.description}"
    return ""


def _choices(names: tuple[str, ...], none: str) -> str:
    return f"this adapter takes {', '.join(sorted(names))}" if names else f"this adapter {none}"
