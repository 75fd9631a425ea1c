"""`check()` reports every problem of a policy bundle at its exact file, line and column.

Each case copies the shipped bundle (policies/, templates/, providers.yaml) into a temporary
directory, makes one small targeted edit, and asserts the complete list of diagnostics: file,
line, column and code written literally (worked out by reading the edited YAML, not by asking
the checker), plus a fragment of each message that names the offending value. The whole list
is compared, so a problem reported twice, or a spurious follow-on error, fails a case just as
a wrong location does.

Locations follow PyYAML's marks: a value is where its scalar or flow collection starts (a
quoted scalar at its quote, a block scalar at its `|`/`>` indicator), a block mapping where
its first key starts, an unknown field at its key.

The location table runs the policy test suites only for the cases about suites; whether a
file that fails to load may be followed by suite results is asked once, separately, by
`test_a_file_that_fails_to_load_is_not_followed_by_suite_failures`.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

from gateway.api.app import create_app
from gateway.cli import main
from gateway.policy.checker import CheckResult, check, load_policy
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths
from gateway.policy.diagnostics import Diagnostic, PolicyError
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CEL_RUNTIMES = ("cel-python", "cel-expr-python")
# Settings.from_env() (used by the CLI) must not pick up a developer's environment.
SETTINGS_VARIABLES = (
    "NOTIGATE_POLICIES",
    "NOTIGATE_TEMPLATES",
    "NOTIGATE_PROVIDERS",
    "NOTIGATE_SCHEMAS",
    "NOTIGATE_CEL_RUNTIME",
)
FORMAT = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>[a-z-]+): (?P<message>.+)$")


# --- the bundle under test ----------------------------------------------------------------


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the shipped bundle, with the working directory set to it."""
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy2(REPO / "providers.yaml", tmp_path / "providers.yaml")
    monkeypatch.chdir(tmp_path)
    for variable in SETTINGS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


def paths() -> BundlePaths:
    """The copied bundle; with no schemas/ of its own it uses the repository's."""
    return BundlePaths.for_policies(Path("policies"))


Edit = Callable[[Path], None]


def replace(file: str, old: str, new: str) -> Edit:
    """Replace the one occurrence of `old` in `file` (failing loudly if it is not unique)."""

    def apply(root: Path) -> None:
        path = root / file
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{file}: expected exactly one {old!r}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    return apply


def append(file: str, snippet: str) -> Edit:
    def apply(root: Path) -> None:
        path = root / file
        path.write_text(path.read_text(encoding="utf-8") + snippet, encoding="utf-8")

    return apply


def write(file: str, text: str) -> Edit:
    def apply(root: Path) -> None:
        (root / file).write_text(text, encoding="utf-8")

    return apply


def delete(file: str) -> Edit:
    def apply(root: Path) -> None:
        (root / file).unlink()

    return apply


def apply_all(root: Path, edits: tuple[Edit, ...]) -> None:
    for edit in edits:
        edit(root)


@dataclass(frozen=True)
class Expected:
    file: str
    line: int
    col: int
    code: str
    says: str  # a fragment of the message

    @property
    def where(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.col, self.code)


def E(location: str, code: str, says: str) -> Expected:
    """An expected diagnostic, its location written as the checker prints it: `file:line:col`."""
    file, line, col = location.rsplit(":", 2)
    return Expected(file, int(line), int(col), code, says)


@dataclass(frozen=True)
class Case:
    id: str
    edits: tuple[Edit, ...]
    expected: tuple[Expected, ...]  # in sorted order: exactly what check() must report
    suites: bool = False  # run the policy test suites (for the cases about them)


def located(diagnostics: list[Diagnostic]) -> list[tuple[str, int, int, str]]:
    return [(d.file, d.line, d.col, d.code) for d in diagnostics]


def assert_reports(result: CheckResult, expected: tuple[Expected, ...]) -> None:
    shown = "\n".join(d.format() for d in result.diagnostics)
    assert located(result.diagnostics) == [e.where for e in expected], f"check() reported:\n{shown}"
    for want, got in zip(expected, result.diagnostics, strict=True):
        assert want.says in got.message, f"{got.format()}\n  does not say {want.says!r}"
    assert not result.ok
    assert result.policy is None


# --- the shipped bundle is clean ----------------------------------------------------------


@pytest.mark.parametrize("runtime", ["auto", *CEL_RUNTIMES])
def test_the_pristine_copy_checks_clean(bundle: Path, runtime: str) -> None:
    result = check(paths(), runtime=runtime)
    assert result.diagnostics == []
    assert result.ok
    assert isinstance(result.policy, CompiledPolicy)
    assert result.suites is not None
    assert result.suites.results, "the shipped suites must have run"
    assert result.suites.failures == []


# --- one problem, one exact location --------------------------------------------------------

CASES = [
    # -- YAML --
    Case(
        "yaml-syntax: a second ':' in a plain scalar",
        (
            replace(
                "policies/marketing.yaml",
                "description: Campaigns, promotions and digests.",
                "description: Campaigns: promotions and digests.",
            ),
        ),
        # `description: Campaigns: promotions...`: the offending ':' is column 23 of line 8.
        (E("policies/marketing.yaml:8:23", "yaml-syntax", "mapping values are not allowed"),),
    ),
    Case(
        "yaml-duplicate-key: a rule's second `dedup`",
        (replace("policies/security.yaml", "    dedup: 30s\n", "    dedup: 30s\n    dedup: 1m\n"),),
        (E("policies/security.yaml:34:5", "yaml-duplicate-key", "duplicate key 'dedup'"),),
    ),
    Case(
        "yaml-document: two documents in one file",
        (append("policies/marketing.yaml", "---\nkind: Policy\n"),),
        (E("policies/marketing.yaml:1:1", "yaml-document", "found 2"),),
    ),
    Case(
        "yaml-document: a file with only a comment",
        (write("policies/marketing.yaml", "# nothing here yet\n"),),
        (E("policies/marketing.yaml:1:1", "yaml-document", "found 0"),),
    ),
    # -- JSON Schema --
    Case(
        "schema: unknown field of a block mapping, at the key",
        (replace("policies/social.yaml", "    dedup: 10m\n", "    dedup: 10m\n    chanels: [push]\n"),),
        (E("policies/social.yaml:41:5", "schema", "rules[3].chanels: unknown field 'chanels'"),),
    ),
    Case(
        "schema: unknown field of a flow mapping, at the key",
        (
            replace(
                "policies/social.yaml",
                "batch: {window: 300s, max: 50}",
                "batch: {window: 300s, max: 50, size: 10}",
            ),
        ),
        # `    batch: {window: 300s, max: 50, size: 10}`: `size` starts at column 36.
        (E("policies/social.yaml:26:36", "schema", "unknown field 'size'; expected one of: by, max"),),
    ),
    Case(
        "schema: unknown top-level field of the Defaults",
        (replace("policies/defaults.yaml", "timezone: UTC ", "timezon: UTC  "),),
        (E("policies/defaults.yaml:9:1", "schema", "unknown field 'timezon'"),),
    ),
    Case(
        "schema: missing required field, at the mapping that lacks it",
        (replace("policies/marketing.yaml", "    limit: 3\n", ""),),
        # caps[0] is the block mapping whose first key, `name`, is at 18:5.
        (E("policies/marketing.yaml:18:5", "schema", "caps[0]: missing required field 'limit'"),),
    ),
    Case(
        "schema: bad enum value",
        (
            replace(
                "policies/security.yaml",
                "    strategy: first\n    fallback: [push, sms, email]",
                "    strategy: firts\n    fallback: [push, sms, email]",
            ),
        ),
        (E("policies/security.yaml:22:15", "schema", "strategy: 'firts' is not one of 'all', 'first'"),),
    ),
    Case(
        "schema: bad duration '10 minutes'",
        (replace("policies/transactional.yaml", "  dedup: 10m", "  dedup: 10 minutes"),),
        (E("policies/transactional.yaml:13:10", "schema", "defaults.dedup: '10 minutes' is not valid"),),
    ),
    Case(
        "schema: bad clock '25:00'",
        (replace("policies/marketing.yaml", 'start: "09:00"', 'start: "25:00"'),),
        # `    delivery_window: {days: [mon, ...], start: "25:00", ...}`: its quote is at column 63.
        (E("policies/marketing.yaml:40:63", "schema", "delivery_window.start: '25:00' is not valid"),),
    ),
    Case(
        "schema: wrong type",
        (replace("policies/marketing.yaml", "    limit: 3", "    limit: three"),),
        (E("policies/marketing.yaml:20:12", "schema", "expected an integer, got the string 'three'"),),
    ),
    Case(
        "schema: unknown kind",
        (replace("policies/social.yaml", "kind: Policy", "kind: Polcy"),),
        (E("policies/social.yaml:6:7", "schema", "kind 'Polcy' does not belong here"),),
    ),
    Case(
        "schema: unknown field in a policy test suite",
        (replace("policies/tests/social_test.yaml", "      rule: comments", "      rul: comments"),),
        (E("policies/tests/social_test.yaml:52:7", "schema", "unknown field 'rul'"),),
    ),
    Case(
        "schema: misspelt priority in a tier map (oneOf name|mapping), at the key",
        (
            replace(
                "policies/transactional.yaml",
                "{urgent: critical, normal: standard, low: standard}",
                "{urgent: critical, normal: standard, lo: standard}",
            ),
        ),
        # `    tier: {urgent: critical, normal: standard, lo: standard}`: `lo` is at column 48.
        (E("policies/transactional.yaml:33:48", "schema", "unknown field 'lo'"),),
    ),
    Case(
        "schema: misspelt field of an expected suppression (oneOf channel|mapping), at the key",
        (
            replace(
                "policies/tests/social_test.yaml",
                "        - {channel: push, reason: policy, rule: no-self-notifications}",
                "        - {channel: push, reasn: policy, rule: no-self-notifications}",
            ),
        ),
        # `        - {channel: push, reasn: policy, ...}`: `reasn` is at column 27.
        (E("policies/tests/social_test.yaml:78:27", "schema", "unknown field 'reasn'"),),
    ),
    Case(
        "schema: wrong type in providers.yaml, and nothing else",
        (replace("providers.yaml", "    cost: 0.0075", "    cost: cheap"),),
        (E("providers.yaml:14:11", "schema", "twilio.cost: expected a number, got the string 'cheap'"),),
    ),
    # -- bundle structure --
    Case(
        "missing-defaults: no Defaults file",
        (delete("policies/defaults.yaml"),),
        (E("policies:1:1", "missing-defaults", "no file of kind Defaults"),),
    ),
    Case(
        "duplicate-defaults: a second Defaults file",
        (write("policies/defaults_copy.yaml", (REPO / "policies" / "defaults.yaml").read_text("utf-8")),),
        # The copy sorts after defaults.yaml; its `kind: Defaults` value is at 6:7.
        (E("policies/defaults_copy.yaml:6:7", "duplicate-defaults", "the first is policies/defaults.yaml"),),
    ),
    Case(
        "duplicate-category: two files for one category",
        (replace("policies/social.yaml", "category: social", "category: marketing"),),
        (
            E(
                "policies/social.yaml:7:11",
                "duplicate-category",
                "'marketing' is already defined in policies/",
            ),
        ),
    ),
    Case(
        "duplicate-name: two rules of one file",
        (replace("policies/social.yaml", "  - name: comments", "  - name: likes"),),
        (
            E(
                "policies/social.yaml:28:11",
                "duplicate-name",
                "rule name 'likes' is already used at policies/social.yaml:24:11",
            ),
        ),
    ),
    Case(
        "duplicate-name: a rule named like a cap of the Defaults",
        (replace("policies/social.yaml", "  - name: likes", "  - name: push-per-hour"),),
        # defaults.yaml:66 is `  - {name: push-per-hour, ...}`: the name's value is at column 12.
        (
            E(
                "policies/social.yaml:24:11",
                "duplicate-name",
                "'push-per-hour' is already used at policies/defaults.yaml:66:12",
            ),
        ),
    ),
    # -- channels --
    Case(
        "unknown-channel: in a rule's channels",
        (
            replace(
                "policies/security.yaml",
                "    channels: [push, email, in_app]",
                "    channels: [push, email, inapp]",
            ),
        ),
        (E("policies/security.yaml:40:29", "unknown-channel", "unknown channel 'inapp'"),),
    ),
    Case(
        "unknown-channel: in a rule's fallback",
        (
            replace(
                "policies/security.yaml",
                "    fallback: [push, sms, email]",
                "    fallback: [push, sms, emial]",
            ),
        ),
        (E("policies/security.yaml:23:27", "unknown-channel", "unknown channel 'emial'"),),
    ),
    Case(
        "unknown-channel: in a cap",
        (replace("policies/marketing.yaml", "    channels: [push]\n", "    channels: [psh]\n"),),
        (E("policies/marketing.yaml:24:16", "unknown-channel", "unknown channel 'psh'"),),
    ),
    Case(
        "unknown-channel: in file defaults two rules inherit, reported once",
        (
            replace(
                "policies/transactional.yaml",
                "  channels: [push, email, sms, in_app]",
                "  channels: [push, email, sms, inapp]",
            ),
        ),
        (E("policies/transactional.yaml:12:32", "unknown-channel", "unknown channel 'inapp'"),),
    ),
    Case(
        "unknown-channel: without a follow-on unknown-template for that channel",
        (
            replace(
                "policies/social.yaml",
                "    channels: [push, email, in_app]",
                "    channels: [push, email, inapp]",
            ),
        ),
        (E("policies/social.yaml:39:29", "unknown-channel", "unknown channel 'inapp'"),),
    ),
    Case(
        "unknown-channel: a route of providers.yaml, at its key",
        (replace("providers.yaml", "  webhook: [webhook]\n", "  webhook: [webhook]\n  fax: [faxmachine]\n"),),
        # Line 94 is `  fax: [faxmachine]`: the channel is at column 3, the provider at column 9.
        (
            E("providers.yaml:109:3", "unknown-channel", "unknown channel 'fax'"),
            E("providers.yaml:109:9", "unknown-provider", "unknown provider 'faxmachine'"),
        ),
    ),
    Case(
        "channel-not-used: in a rule's fallback",
        (
            replace(
                "policies/security.yaml", "    fallback: [sms, email]", "    fallback: [sms, email, push]"
            ),
        ),
        (E("policies/security.yaml:32:28", "channel-not-used", "fallback names 'push'"),),
    ),
    Case(
        "channel-not-used: in a rule's mute",
        (replace("policies/security.yaml", "    dedup: 30s\n", "    dedup: 30s\n    mute: [in_app]\n"),),
        (E("policies/security.yaml:34:12", "channel-not-used", "mute names 'in_app'"),),
    ),
    Case(
        "channel-not-used: a key of a rule's providers, at the key",
        (
            replace(
                "policies/security.yaml", "    dedup: 30s\n", "    dedup: 30s\n    providers: {push: [fcm]}\n"
            ),
        ),
        (E("policies/security.yaml:34:17", "channel-not-used", "providers given for 'push'"),),
    ),
    # -- tiers and settings --
    Case(
        "unknown-tier: in a tier map",
        (
            replace(
                "policies/transactional.yaml",
                "normal: standard, low: standard}",
                "normal: standrd, low: standard}",
            ),
        ),
        (E("policies/transactional.yaml:33:38", "unknown-tier", "unknown tier 'standrd'"),),
    ),
    Case(
        "unknown-tier: a rule's tier, reported once",
        (replace("policies/social.yaml", "    dedup: 10m\n", "    dedup: 10m\n    tier: standrd\n"),),
        (E("policies/social.yaml:41:11", "unknown-tier", "unknown tier 'standrd'"),),
    ),
    Case(
        "unknown-tier: in file defaults four rules inherit, reported once",
        (replace("policies/social.yaml", "  tier: standard", "  tier: standrd"),),
        (E("policies/social.yaml:11:9", "unknown-tier", "unknown tier 'standrd'"),),
    ),
    Case(
        "missing-tier: a priority the rule matches has no tier",
        (
            replace(
                "policies/transactional.yaml",
                "{urgent: critical, normal: standard, low: standard}",
                "{urgent: critical, normal: standard}",
            ),
        ),
        (
            E(
                "policies/transactional.yaml:33:11",
                "missing-tier",
                "rule 'payment-updates' can match priority low",
            ),
        ),
    ),
    Case(
        "missing-setting: rules without channels, at each rule",
        (replace("policies/social.yaml", "  channels: [push, in_app]\n", ""),),
        # One line fewer: the rules likes, comments and follows start at 23:5, 27:5 and 31:5.
        (
            E("policies/social.yaml:23:5", "missing-setting", "rule 'likes' has no 'channels'"),
            E("policies/social.yaml:27:5", "missing-setting", "rule 'comments' has no 'channels'"),
            E("policies/social.yaml:31:5", "missing-setting", "rule 'follows' has no 'channels'"),
        ),
    ),
    # -- templates, providers --
    Case(
        "unknown-template: an exact event with no template for one channel",
        (
            replace(
                "policies/social.yaml",
                "    batch: {window: 300s, max: 50}\n",
                "    batch: {window: 300s, max: 50}\n    channels: [push, email, in_app]\n",
            ),
        ),
        # `    match: {events: [social.like], ...}`: the event is at 25:22.
        (
            E(
                "policies/social.yaml:25:22",
                "unknown-template",
                "templates/social.like/email.yaml does not exist",
            ),
        ),
    ),
    Case(
        "unknown-template: an explicit template, one problem per channel",
        (
            replace(
                "policies/security.yaml",
                "    dedup: 30s\n",
                "    dedup: 30s\n    template: security.one_time_code\n",
            ),
        ),
        (
            E(
                "policies/security.yaml:34:15",
                "unknown-template",
                "templates/security.one_time_code/email.yaml",
            ),
            E(
                "policies/security.yaml:34:15",
                "unknown-template",
                "templates/security.one_time_code/sms.yaml",
            ),
        ),
    ),
    Case(
        "unknown-template: an event pattern no template directory matches",
        (replace("policies/marketing.yaml", 'events: ["marketing.*"]', 'events: ["promo.*"]'),),
        (E("policies/marketing.yaml:38:16", "unknown-template", "no template directory matches 'promo.*'"),),
    ),
    Case(
        "unknown-provider: in a rule's providers",
        (
            replace(
                "policies/security.yaml",
                "    dedup: 30s\n",
                "    dedup: 30s\n    providers: {email: [sendgird]}\n",
            ),
        ),
        (E("policies/security.yaml:34:25", "unknown-provider", "unknown provider 'sendgird'"),),
    ),
    Case(
        "unknown-provider: in a route of providers.yaml",
        (replace("providers.yaml", "  email: [sendgrid, smtp]", "  email: [sendgrid, smtpp]"),),
        (E("providers.yaml:105:21", "unknown-provider", "unknown provider 'smtpp'"),),
    ),
    # -- providers.yaml against each adapter's declared settings (gateway/providers/settings.py) --
    Case(
        "unknown-provider-setting: a misspelt key, at the key; the required one it hid is missing",
        (
            replace(
                "providers.yaml",
                "      from: {env: TWILIO_FROM_NUMBER}  # required",
                "      form: {env: TWILIO_FROM_NUMBER}  # required",
            ),
        ),
        (
            E(
                "providers.yaml:19:5",
                "missing-provider-setting",
                "'twilio' (adapter twilio): settings.from is required",
            ),
            E(
                "providers.yaml:20:7",
                "unknown-provider-setting",
                "unknown setting 'form'; this adapter takes base_url, from",
            ),
        ),
    ),
    Case(
        "unknown-provider-setting: in a profile's settings",
        (
            replace(
                "providers.yaml", "      directory: {env: NOTIGATE_OUTBOX", "      dir: {env: NOTIGATE_OUTBOX"
            ),
        ),
        (
            E(
                "providers.yaml:115:7",
                "unknown-provider-setting",
                "profile 'dev' (adapter devfile): unknown setting 'dir'",
            ),
        ),
    ),
    Case(
        "provider-setting-type: a literal of the wrong type, at the value",
        (replace("providers.yaml", "starttls: {env: SMTP_STARTTLS, default: true}", "starttls: maybe"),),
        (
            E(
                "providers.yaml:48:17",
                "provider-setting-type",
                "settings.starttls='maybe' is not valid: Expected `bool`",
            ),
        ),
    ),
    Case(
        "provider-setting-type: a variable's default of the wrong type, at the default",
        (
            replace(
                "providers.yaml",
                "port: {env: SMTP_PORT, default: 587}",
                "port: {env: SMTP_PORT, default: 70000}",
            ),
        ),
        (
            E(
                "providers.yaml:46:39",
                "provider-setting-type",
                "settings.port=70000 is not valid: Expected `int` <= 65535",
            ),
        ),
    ),
    Case(
        "missing-provider-setting: every required setting, at the settings key",
        (
            replace(
                "providers.yaml",
                "      key_id: {env: APNS_KEY_ID}  # the key's 10-character id\n"
                "      team_id: {env: APNS_TEAM_ID}  # the developer team's 10-character id\n",
                "",
            ),
        ),
        (
            E(
                "providers.yaml:82:5",
                "missing-provider-setting",
                "'apns' (adapter apns): settings.key_id is required",
            ),
            E("providers.yaml:82:5", "missing-provider-setting", "settings.team_id is required"),
        ),
    ),
    Case(
        "missing-provider-setting: no settings at all, at the provider's entry",
        (
            replace(
                "providers.yaml",
                "    settings:\n"
                "      from: {env: TWILIO_FROM_NUMBER}  # required under the live profile: "
                "your Twilio number\n"
                '      base_url: {env: TWILIO_BASE_URL, default: "https://api.twilio.com"}\n'
                "      status_callback: {env: TWILIO_STATUS_CALLBACK_URL}\n",
                "",
            ),
        ),
        (E("providers.yaml:12:5", "missing-provider-setting", "'twilio' (adapter twilio): settings.from"),),
    ),
    Case(
        "missing-credential: a credential without its variable name, at the credentials key",
        (
            replace(
                "providers.yaml",
                "credentials: {account_sid: TWILIO_ACCOUNT_SID, auth_token: TWILIO_AUTH_TOKEN}",
                "credentials: {account_sid: TWILIO_ACCOUNT_SID}",
            ),
        ),
        (
            E(
                "providers.yaml:18:5",
                "missing-credential",
                "credentials.auth_token must name the environment variable",
            ),
        ),
    ),
    Case(
        "unknown-credential: a credential the adapter does not read, at its key",
        (
            replace(
                "providers.yaml",
                "credentials: {api_key: SENDGRID_API_KEY}",
                "credentials: {api_key: SENDGRID_API_KEY, api_secret: SENDGRID_SECRET}",
            ),
        ),
        (
            E(
                "providers.yaml:31:46",
                "unknown-credential",
                "unknown credential 'api_secret'; this adapter takes api_key",
            ),
        ),
    ),
    Case(
        "unknown-provider: no route for a channel rules use, once per place",
        (replace("providers.yaml", "  sms: [twilio]\n", ""),),
        # security: the file defaults' channels (fraud-alert) and one-time-code's own channels;
        # transactional: the file defaults' channels, which two rules inherit.
        (
            E("policies/security.yaml:12:13", "unknown-provider", "no provider delivers channel 'sms'"),
            E("policies/security.yaml:29:15", "unknown-provider", "no provider delivers channel 'sms'"),
            E("policies/transactional.yaml:12:13", "unknown-provider", "no provider delivers channel 'sms'"),
        ),
    ),
    Case(
        "provider-channel: a rule routes email through an SMS provider",
        (
            replace(
                "policies/security.yaml",
                "    dedup: 30s\n",
                "    dedup: 30s\n    providers: {email: [twilio]}\n",
            ),
        ),
        (E("policies/security.yaml:34:25", "provider-channel", "provider 'twilio' delivers sms, not email"),),
    ),
    Case(
        "provider-channel: in a route of providers.yaml",
        (replace("providers.yaml", "  email: [sendgrid, smtp]", "  email: [sendgrid, twilio]"),),
        (E("providers.yaml:105:21", "provider-channel", "provider 'twilio' delivers sms, not email"),),
    ),
    # -- meaning --
    Case(
        "invalid-timezone",
        (replace("policies/defaults.yaml", "timezone: UTC ", "timezone: Mars/Olympus "),),
        (E("policies/defaults.yaml:9:11", "invalid-timezone", "'Mars/Olympus' is not an IANA time zone"),),
    ),
    Case(
        "ambiguous-rules: two equally specific rules, at the later one",
        (
            replace(
                "policies/social.yaml",
                "{events: [social.comment], priorities: [normal, low]}",
                "{events: [social.like], priorities: [normal, low]}",
            ),
        ),
        (
            E(
                "policies/social.yaml:28:5",
                "ambiguous-rules",
                "'likes' (policies/social.yaml:24:5) and 'comments' are equally specific for 'social.like'",
            ),
        ),
    ),
    Case(
        "missing-digest: at the cap that overflows into a digest",
        (replace("policies/marketing.yaml", "digest: marketing.weekly_digest\n", ""),),
        # One line fewer: caps[0] (marketing-email-per-day) says `overflow: digest` at 21:15.
        (E("policies/marketing.yaml:21:15", "missing-digest", "names no `digest` event"),),
    ),
    Case(
        "unknown-digest: no rule matches the digest event",
        (replace("policies/marketing.yaml", "digest: marketing.weekly_digest", "digest: newsletter.weekly"),),
        (
            E(
                "policies/marketing.yaml:9:9",
                "unknown-digest",
                "no rule matches the digest event 'newsletter.weekly'",
            ),
        ),
    ),
    # -- policy test suites: at the case (its mapping starts at its `name`) --
    Case(
        "test-failed: expected vs got",
        (replace("policies/tests/social_test.yaml", "      rule: comments", "      rule: follows"),),
        (
            E(
                "policies/tests/social_test.yaml:49:5",
                "test-failed",
                "test 'R11: comments wait 600 seconds, follows 900': "
                "rule: expected 'follows', got 'comments'",
            ),
        ),
        suites=True,
    ),
    Case(
        "test-invalid: unknown user fixture",
        (
            replace(
                "policies/tests/social_test.yaml",
                "    intent: {event: social.follow,",
                "    user: edsgar\n    intent: {event: social.follow,",
            ),
        ),
        (E("policies/tests/social_test.yaml:57:5", "test-invalid", "unknown user fixture 'edsgar'"),),
        suites=True,
    ),
    Case(
        "test-invalid: unknown history fixture",
        (
            replace(
                "policies/tests/social_test.yaml",
                "    intent: {event: social.follow,",
                "    history: burst\n    intent: {event: social.follow,",
            ),
        ),
        (E("policies/tests/social_test.yaml:57:5", "test-invalid", "unknown history fixture 'burst'"),),
        suites=True,
    ),
]

# CEL problems, run under each runtime: located at the start of the expression's YAML scalar,
# the message quoting the expression.
CEL_CASES = [
    Case(
        "cel-check: a helper with too few arguments is not an undeclared reference",
        (
            replace(
                "policies/transactional.yaml",
                "&& intent.data.digital == true",
                '&& local_time(now) == "10:00"',
            ),
        ),
        (
            E(
                "policies/transactional.yaml:25:13",
                "cel-check",
                "local_time takes 2 arguments (timestamp, string), got 1: "
                "local_time(timestamp, string) -> string (column 29)",
            ),
        ),
    ),
    Case(
        "cel-syntax: an unclosed parenthesis is shown where it opens",
        (replace("policies/social.yaml", "has(intent.data.actor_id) &&", "has(intent.data.actor_id &&"),),
        (E("policies/social.yaml:17:11", "cel-syntax", "Syntax error: '(' is never closed (column 4)"),),
    ),
    Case(
        "cel-syntax: a constraint's condition ends early",
        (
            replace(
                "policies/social.yaml", "intent.data.actor_id == intent.user_id", "intent.data.actor_id =="
            ),
        ),
        (
            E(
                "policies/social.yaml:17:11",
                "cel-syntax",
                "in CEL expression 'has(intent.data.actor_id) && intent.data.actor_id ==': Syntax error",
            ),
        ),
    ),
    Case(
        "cel-syntax: a quoted condition of a Defaults constraint",
        (
            replace(
                "policies/defaults.yaml",
                "    priorities: [low]\n",
                '    priorities: [low]\n    when: "intent.data.amount >"\n    on_error: match\n',
            ),
        ),
        # Line 73 is `    when: "intent.data.amount >"`: the opening quote is at column 11.
        (E("policies/defaults.yaml:73:11", "cel-syntax", "in CEL expression 'intent.data.amount >'"),),
    ),
    Case(
        "cel-check: undeclared variable in a rule's match",
        (
            replace(
                "policies/transactional.yaml", "&& intent.data.digital == true", "&& data.digital == true"
            ),
        ),
        (
            E(
                "policies/transactional.yaml:25:13",
                "cel-check",
                "in CEL expression 'has(intent.data.digital) && data.digital == true': undeclared reference",
            ),
        ),
    ),
    Case(
        "cel-check: undeclared function",
        (
            replace(
                "policies/transactional.yaml",
                "when: has(intent.data.digital) && intent.data.digital == true",
                "when: is_digital(intent)",
            ),
        ),
        (
            E(
                "policies/transactional.yaml:25:13",
                "cel-check",
                "in CEL expression 'is_digital(intent)': undeclared reference to 'is_digital'",
            ),
        ),
    ),
    Case(
        "cel-check: a block scalar, at its indicator",
        (
            replace(
                "policies/transactional.yaml",
                "      when: has(intent.data.digital) && intent.data.digital == true\n",
                "      when: |\n        has(intent.data.digital) &&\n        data.digital == true\n",
            ),
        ),
        # `      when: |` is at 25:13; the message gives the line within the expression.
        (E("policies/transactional.yaml:25:13", "cel-check", "(line 2, column "),),
    ),
]


def _location_params() -> list[object]:
    params: list[object] = [pytest.param(case, "auto", id=case.id) for case in CASES]
    for case in CEL_CASES:
        params += [pytest.param(case, runtime, id=f"{case.id} [{runtime}]") for runtime in CEL_RUNTIMES]
    return params


@pytest.mark.parametrize(("case", "runtime"), _location_params())
def test_each_problem_is_reported_at_its_exact_location(bundle: Path, case: Case, runtime: str) -> None:
    apply_all(bundle, case.edits)
    assert_reports(check(paths(), runtime=runtime, run_tests=case.suites), case.expected)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CEL_CASES])
def test_both_cel_runtimes_report_the_same_locations(bundle: Path, case: Case) -> None:
    apply_all(bundle, case.edits)
    by_runtime = [located(check(paths(), runtime=r, run_tests=False).diagnostics) for r in CEL_RUNTIMES]
    assert by_runtime == [[e.where for e in case.expected]] * len(CEL_RUNTIMES)


@pytest.mark.parametrize(
    "replacement",
    [
        pytest.param("&& data.digital == true", id="undeclared variable"),
        pytest.param("&& is_digital(intent)", id="undeclared function"),
    ],
)
@pytest.mark.parametrize("runtime", CEL_RUNTIMES)
def test_cel_message_gives_the_column_of_the_undeclared_name(
    bundle: Path, runtime: str, replacement: str
) -> None:
    """In `has(intent.data.digital) && <name>...` the undeclared name starts at column 29."""
    apply_all(
        bundle, (replace("policies/transactional.yaml", "&& intent.data.digital == true", replacement),)
    )
    [diagnostic] = check(paths(), runtime=runtime).diagnostics
    assert (diagnostic.file, diagnostic.line, diagnostic.col, diagnostic.code) == (
        "policies/transactional.yaml",
        25,
        13,
        "cel-check",
    )
    assert diagnostic.message.endswith("(column 29)"), diagnostic.message


# --- many problems, one run -----------------------------------------------------------------


def test_several_problems_are_all_reported_sorted_by_file_line_col(bundle: Path) -> None:
    apply_all(
        bundle,
        (
            # Found while loading files: a YAML error, a schema error in a test suite.
            replace(
                "policies/marketing.yaml",
                "description: Campaigns, promotions and digests.\n",
                "description: Campaigns, promotions and digests.\ncategory: promotions\n",
            ),
            replace("policies/tests/social_test.yaml", "      rule: comments", "      rul: comments"),
            # Found while compiling: the Defaults, then providers.yaml, then the policies.
            replace("policies/defaults.yaml", "timezone: UTC ", "timezone: Mars/Olympus "),
            replace("providers.yaml", "  email: [sendgrid, smtp]", "  email: [sendgrid, smtpp]"),
            # Two in security.yaml: the digest check runs after the rules, yet sorts first.
            replace(
                "policies/security.yaml",
                "description: Fraud alerts, one-time codes and account changes.\n",
                "description: Fraud alerts, one-time codes and account changes.\n"
                "digest: newsletter.security\n",
            ),
            replace(
                "policies/security.yaml",
                "    channels: [push, email, in_app]",
                "    channels: [push, email, inapp]",
            ),
        ),
    )
    result = check(paths())
    assert_reports(
        result,
        (
            E("policies/defaults.yaml:9:11", "invalid-timezone", "'Mars/Olympus'"),
            E("policies/marketing.yaml:9:1", "yaml-duplicate-key", "duplicate key 'category'"),
            E("policies/security.yaml:9:9", "unknown-digest", "'newsletter.security'"),
            E("policies/security.yaml:41:29", "unknown-channel", "unknown channel 'inapp'"),
            E("policies/tests/social_test.yaml:52:7", "schema", "unknown field 'rul'"),
            E("providers.yaml:105:21", "unknown-provider", "unknown provider 'smtpp'"),
        ),
    )
    keys = [(d.file, d.line, d.col) for d in result.diagnostics]
    assert keys == sorted(keys)


def test_a_broken_defaults_file_still_lets_every_other_file_be_checked(bundle: Path) -> None:
    """A schema error in the Defaults used to hide everything found while compiling."""
    apply_all(
        bundle,
        (
            replace("policies/defaults.yaml", "timezone: UTC ", "timezone: 5 "),
            replace("providers.yaml", "  email: [sendgrid, smtp]", "  email: [sendgrid, smtpp]"),
            replace(
                "policies/social.yaml", "intent.data.actor_id == intent.user_id", "intent.data.actor_id =="
            ),
            replace("policies/tests/social_test.yaml", "      rule: comments", "      rul: comments"),
        ),
    )
    assert_reports(
        check(paths()),
        (
            E("policies/defaults.yaml:9:11", "schema", "expected a string"),
            E("policies/social.yaml:17:11", "cel-syntax", "Syntax error"),
            E("policies/tests/social_test.yaml:52:7", "schema", "unknown field 'rul'"),
            E("providers.yaml:105:21", "unknown-provider", "unknown provider 'smtpp'"),
        ),
    )


def test_a_template_syntax_error_is_not_also_reported_as_a_missing_default(bundle: Path) -> None:
    """order.shipped has push.fr.yaml too: a broken push.yaml used to add a false "add push.yaml"."""
    apply_all(
        bundle,
        (
            replace(
                "templates/order.shipped/push.yaml",
                'title: "Your order is on its way"',
                'title: "Your order is {% if %}on its way"',
            ),
        ),
    )
    assert_reports(
        check(paths(), run_tests=False),
        (E("templates/order.shipped/push.yaml:4:8", "template-syntax", "title: Expected an expression"),),
    )


def test_tests_run_for_what_compiled_and_templates_do_not_hide_them(bundle: Path) -> None:
    """A broken policy file, a broken template and a failing test case, all in one run.

    The cases for the events security.yaml routes cannot run without it and are skipped,
    naming the file; every other case runs against the rules that compiled.
    """
    apply_all(
        bundle,
        (
            replace("policies/security.yaml", "    dedup: 30s\n", "    dedup: 30s\n    dedupe: 1m\n"),
            replace(
                "templates/social.like/push.yaml",
                'body: "{{ data.post_title }}"',
                'body: "{{ data.post_title }"',
            ),
            replace("policies/tests/social_test.yaml", "      rule: comments", "      rule: follows"),
        ),
    )
    result = check(paths())
    assert located(result.diagnostics) == [
        ("policies/security.yaml", 34, 5, "schema"),
        ("policies/tests/social_test.yaml", 49, 5, "test-failed"),
        ("templates/social.like/push.yaml", 5, 7, "template-syntax"),
    ]
    assert result.status == "invalid"
    assert result.suites is not None
    skipped = {case.intent.event for case, _ in result.suites.skipped}
    assert skipped and all(event.startswith("security.") for event in skipped), skipped
    assert {why for _, why in result.suites.skipped} == {
        f"policies/security.yaml routes {event!r} and has problems" for event in skipped
    }
    ran = {r.case.intent.event for r in result.suites.results}
    assert not any(event.startswith("security.") for event in ran)
    assert len(result.suites.results) + len(result.suites.skipped) == 62


def test_a_file_too_broken_to_read_skips_every_case(bundle: Path) -> None:
    """Which events a file that does not parse routes is unknown: no case can be trusted."""
    apply_all(bundle, (replace("policies/social.yaml", "category: social", "category: [social"),))
    result = check(paths())
    assert [d.code for d in result.diagnostics] == ["yaml-syntax"]
    assert result.suites is not None and not result.suites.results
    assert len(result.suites.skipped) == 62


# --- the policy test suites -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            replace(
                "policies/marketing.yaml",
                "description: Campaigns, promotions and digests.",
                "description: Campaigns: promotions and digests.",
            ),
            E("policies/marketing.yaml:8:23", "yaml-syntax", "mapping values are not allowed"),
            id="yaml-syntax in marketing.yaml",
        ),
        pytest.param(
            write("policies/marketing.yaml", "# nothing here yet\n"),
            E("policies/marketing.yaml:1:1", "yaml-document", "found 0"),
            id="yaml-document in marketing.yaml",
        ),
        pytest.param(
            replace("policies/security.yaml", "    dedup: 30s\n", "    dedup: 30s\n    dedupe: 1m\n"),
            E("policies/security.yaml:34:5", "schema", "unknown field 'dedupe'"),
            id="schema in security.yaml",
        ),
    ],
)
def test_a_file_that_fails_to_load_is_not_followed_by_suite_failures(
    bundle: Path, edit: Edit, expected: Expected
) -> None:
    """A category whose file was dropped must not be tested: its cases could only fail."""
    edit(bundle)
    assert_reports(check(paths()), (expected,))


def test_run_tests_false_skips_the_suites(bundle: Path) -> None:
    apply_all(
        bundle, (replace("policies/tests/social_test.yaml", "      rule: comments", "      rule: follows"),)
    )
    assert [d.code for d in check(paths()).diagnostics] == ["test-failed"]

    result = check(paths(), run_tests=False)
    assert result.diagnostics == []
    assert result.ok
    assert result.suites is None
    assert isinstance(result.policy, CompiledPolicy)


def test_a_failing_case_says_what_was_expected_and_what_came_out(bundle: Path) -> None:
    apply_all(
        bundle,
        (
            replace(
                "policies/tests/social_test.yaml",
                '        - {channel: push, send_at: "2026-11-21T18:15:00Z"}',
                '        - {channel: push, send_at: "2026-11-21T18:16:00Z"}',
            ),
        ),
    )
    [diagnostic] = check(paths()).diagnostics
    assert diagnostic.format() == (
        "policies/tests/social_test.yaml:57:5: test-failed: test 'R11: follows wait 900 seconds': "
        "deliveries.push.send_at: expected '2026-11-21T18:16:00Z', got '2026-11-21T18:15:00+00:00'"
    )


# --- one list of problems, whichever way in -------------------------------------------------------

BROKEN = (
    replace("policies/defaults.yaml", "timezone: UTC ", "timezone: Mars/Olympus "),
    replace("providers.yaml", "  email: [sendgrid, smtp]", "  email: [sendgrid, smtpp]"),
)
BROKEN_LOCATED = [
    ("policies/defaults.yaml", 9, 11, "invalid-timezone"),
    ("providers.yaml", 105, 21, "unknown-provider"),
]


def test_cli_check_prints_each_problem_and_exits_1(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    apply_all(bundle, BROKEN)
    diagnostics = check(paths()).diagnostics
    assert located(diagnostics) == BROKEN_LOCATED

    assert main(["check", "policies"]) == 1
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines == [d.format() for d in diagnostics]
    assert lines == [
        "policies/defaults.yaml:9:11: invalid-timezone: `timezone` 'Mars/Olympus' is not an IANA time zone; "
        "use a name such as 'Europe/Paris'",
        "providers.yaml:105:21: unknown-provider: unknown provider 'smtpp'; "
        "declared: apns, fcm, inbox, sendgrid, smtp, twilio, webhook",
    ]
    assert all(FORMAT.match(line) for line in lines)
    assert "2 problems found" in out.err


def test_cli_check_exits_0_on_the_good_bundle(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "policies"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ")
    assert "test cases passed" in out
    assert not any(FORMAT.match(line) for line in out.splitlines()), out


def test_cli_check_exit_status_tells_an_invalid_bundle_from_failing_tests(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(
        bundle, (replace("policies/tests/social_test.yaml", "      rule: comments", "      rule: follows"),)
    )
    assert main(["check", "policies"]) == 3
    apply_all(bundle, BROKEN)
    assert main(["check", "policies"]) == 1
    out = capsys.readouterr().out
    assert "test-failed" in out and "invalid-timezone" in out


def test_cli_check_gates_coverage_in_the_same_run(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    apply_all(bundle, (delete("policies/tests/marketing_test.yaml"),))
    assert main(["check", "policies", "--min-coverage", "100"]) == 3
    [line] = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"policies:1:1: coverage-below: the test suites exercise \d+\.\d% of rules and branches, "
        r"below the required 100%; .*",
        line,
    ), line
    assert main(["check", "policies", "--min-coverage", "50"]) == 0
    assert "coverage " in capsys.readouterr().out


def test_cli_check_format_github_annotates_each_problem(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(bundle, BROKEN)
    assert main(["check", "policies", "--format", "github"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "::error file=policies/defaults.yaml,line=9,col=11,title=invalid-timezone::`timezone` "
        "'Mars/Olympus' is not an IANA time zone; use a name such as 'Europe/Paris'",
        "::error file=providers.yaml,line=105,col=21,title=unknown-provider::unknown provider 'smtpp'; "
        "declared: apns, fcm, inbox, sendgrid, smtp, twilio, webhook",
    ]


def test_cli_check_format_junit_reports_each_case(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    apply_all(
        bundle,
        (
            replace("policies/security.yaml", "    dedup: 30s\n", "    dedup: 30s\n    dedupe: 1m\n"),
            replace("policies/tests/social_test.yaml", "      rule: comments", "      rule: follows"),
        ),
    )
    assert main(["check", "policies", "--format", "junit"]) == 1
    root = ElementTree.fromstring(capsys.readouterr().out.encode())
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    [problem] = suites["bundle"].iter("failure")
    assert problem.get("type") == "schema"
    [failed] = [case for case in suites["social"] if case.find("failure") is not None]
    assert failed.get("name") == "R11: comments wait 600 seconds, follows 900"
    assert failed.get("file") == "policies/tests/social_test.yaml"
    security = suites["security"]
    assert security.get("skipped") == security.get("tests") == str(len(list(security)))
    total = sum(int(s.get("tests", "0")) for n, s in suites.items() if n != "bundle")
    assert total == 62


def test_cli_test_format_github_annotates_the_failing_case(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_all(
        bundle, (replace("policies/tests/social_test.yaml", "      rule: comments", "      rule: follows"),)
    )
    assert main(["test", "policies", "--format", "github"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "::error file=policies/tests/social_test.yaml,line=49,col=5,title=test-failed::"
        "test 'R11: comments wait 600 seconds, follows 900': rule: expected 'follows', got 'comments'"
    ]


def test_load_policy_raises_the_diagnostics_of_check(bundle: Path) -> None:
    assert isinstance(load_policy(paths()), CompiledPolicy)
    apply_all(bundle, BROKEN)
    with pytest.raises(PolicyError) as raised:
        load_policy(paths())
    assert raised.value.diagnostics == check(paths()).diagnostics
    assert located(raised.value.diagnostics) == BROKEN_LOCATED
    assert str(raised.value).startswith("policy bundle rejected: 2 problems\npolicies/defaults.yaml:9:11: ")


def test_the_server_refuses_to_start_on_a_broken_bundle(bundle: Path) -> None:
    apply_all(bundle, BROKEN)
    with pytest.raises(PolicyError) as raised:
        create_app(Settings(policies_dir=Path("policies")))
    assert raised.value.diagnostics == check(paths()).diagnostics
    assert located(raised.value.diagnostics) == BROKEN_LOCATED


# --- a bundle outside the working directory ---------------------------------------------------


@pytest.mark.parametrize("spelling", ["absolute", "relative"])
def test_files_outside_the_working_directory_are_shown_absolute(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    apply_all(bundle, BROKEN)
    (bundle / "elsewhere").mkdir()
    monkeypatch.chdir(bundle / "elsewhere")
    policies = bundle / "policies" if spelling == "absolute" else Path("../policies")
    result = check(BundlePaths.for_policies(policies))
    root = bundle.resolve()
    assert located(result.diagnostics) == [
        (str(root / "policies" / "defaults.yaml"), 9, 11, "invalid-timezone"),
        (str(root / "providers.yaml"), 105, 21, "unknown-provider"),
    ]


# --- tier options -----------------------------------------------------------------------------


def test_a_tier_opts_into_at_least_once_for_ambiguous_sends(bundle: Path) -> None:
    """`ambiguous: at_least_once` (docs/providers.md); the default, and a misspelling, located."""
    default = check(paths(), run_tests=False).policy
    assert default is not None and not any(t.at_least_once for t in default.tiers.values())
    edit = "    queue: critical\n"
    replace("policies/defaults.yaml", edit, edit + "    ambiguous: at_least_once\n")(bundle)
    opted = check(paths(), run_tests=False).policy
    assert opted is not None
    assert {n for n, t in opted.tiers.items() if t.at_least_once} == {"critical"}
    replace("policies/defaults.yaml", "ambiguous: at_least_once", "ambiguous: twice")(bundle)
    (problem,) = check(paths(), run_tests=False).diagnostics
    assert (problem.file, problem.code) == ("policies/defaults.yaml", "schema")
    assert "twice" in problem.message and problem.line == 28
