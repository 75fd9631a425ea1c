"""Turn the YAML of a policy bundle into a `CompiledPolicy`, collecting every problem.

Validation happens in layers, each reporting located diagnostics: YAML syntax, JSON
Schema, then meaning (references between channels, tiers, templates and providers; CEL
compilation; unique names; ambiguous rules). A layer that fails for a file stops that
file, not the run, so one `notigate check` shows everything wrong at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from gateway.bundle_paths import BundlePaths as BundlePaths
from gateway.bundle_paths import default_schemas_dir as default_schemas_dir
from gateway.bundle_paths import yaml_files
from gateway.cron import CronError, parse_cron
from gateway.model import PRIORITIES, Priority, check_zone
from gateway.policy.cel import CelCompileError, CelRuntime, static_check
from gateway.policy.cel_errors import CelErrorKind
from gateway.policy.cel_functions import glob_event
from gateway.policy.compiled import (
    Batching,
    Cap,
    ChannelDef,
    CompiledPolicy,
    Condition,
    Constraint,
    Defaults,
    Origin,
    PolicyFile,
    PrioritySettings,
    ProviderCatalog,
    ProviderInfo,
    RetryPolicy,
    Rule,
    Schedule,
    Tier,
)
from gateway.policy.diagnostics import Diagnostic, DiagnosticCode, display_path
from gateway.policy.provider_settings import settings_diagnostics
from gateway.policy.schema import SCHEMA_FOR_KIND, SchemaSet
from gateway.policy.source import PathKey, SourceDoc, SourceError, load_yaml
from gateway.timeutil import WEEKDAYS, DailyWindow, WeeklyWindow, parse_duration

CEL_CODES: Mapping[CelErrorKind, DiagnosticCode] = {"syntax": "cel-syntax", "check": "cel-check"}
RULE_SETTINGS = (
    "tier",
    "channels",
    "mute",
    "bypass",
    "strategy",
    "fallback",
    "dedup",
    "batch",
    "delivery_window",
    "quiet_hours",
    "template",
    "providers",
)


@dataclass
class LoadedBundle:
    """Documents of a bundle, grouped by kind, after YAML and schema validation."""

    defaults: list[SourceDoc] = field(default_factory=list)
    policies: list[SourceDoc] = field(default_factory=list)
    suites: list[SourceDoc] = field(default_factory=list)
    providers: SourceDoc | None = None
    templates: dict[tuple[str, str], list[Path]] = field(default_factory=dict)
    files: list[PolicyFile] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Files that parsed but failed the schema: what they say is still worth knowing (which
    # events a broken policy routes decides which test cases can run without it).
    rejected: list[SourceDoc] = field(default_factory=list)


def load_documents(paths: BundlePaths, schemas: SchemaSet) -> LoadedBundle:
    bundle = LoadedBundle()
    if not paths.policies.is_dir():
        bundle.diagnostics.append(
            Diagnostic(
                file=display_path(paths.policies),
                line=1,
                col=1,
                code="missing-directory",
                message="the policies directory does not exist",
            )
        )
        return bundle
    for path in sorted(yaml_files(paths.policies)):
        doc = _load_validated(path, schemas, bundle, expected=("Defaults", "Policy", "PolicyTestSuite"))
        if doc is None:
            continue
        kind = doc.data["kind"]
        {"Defaults": bundle.defaults, "Policy": bundle.policies, "PolicyTestSuite": bundle.suites}[
            kind
        ].append(doc)
    if paths.providers.exists():
        bundle.providers = _load_validated(paths.providers, schemas, bundle, expected=("Providers",))
    else:
        bundle.diagnostics.append(
            Diagnostic(
                file=display_path(paths.providers),
                line=1,
                col=1,
                code="missing-file",
                message="providers file not found",
            )
        )
    bundle.templates = template_index(paths.templates)
    return bundle


def template_index(directory: Path) -> dict[tuple[str, str], list[Path]]:
    """(template name, channel) -> its files, one per locale: `<name>/<channel>[.<locale>].yaml`."""
    index: dict[tuple[str, str], list[Path]] = {}
    if not directory.is_dir():
        return index
    for path in sorted(directory.glob("*/*.yaml")):
        if path.name.startswith("_") or path.stem == "example":
            continue
        channel = path.stem.split(".", 1)[0]
        index.setdefault((path.parent.name, channel), []).append(path)
    return index


def _load_validated(
    path: Path, schemas: SchemaSet, bundle: LoadedBundle, expected: tuple[str, ...]
) -> SourceDoc | None:
    try:
        doc = load_yaml(path)
    except SourceError as exc:
        bundle.diagnostics.append(exc.diagnostic)
        return None
    bundle.files.append(
        PolicyFile(
            path=doc.name,
            kind=str(doc.data.get("kind", "?")) if isinstance(doc.data, dict) else "?",
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        )
    )
    if not isinstance(doc.data, dict):
        bundle.diagnostics.append(doc.diagnostic((), "schema", "expected a mapping at the top level"))
        return None
    kind = doc.data.get("kind")
    if kind not in expected:
        bundle.diagnostics.append(
            doc.diagnostic(
                ("kind",),
                "schema",
                f"kind {kind!r} does not belong here; expected " + " or ".join(repr(k) for k in expected),
            )
        )
        return None
    problems = schemas.validate(doc, SCHEMA_FOR_KIND[kind])
    if problems:
        bundle.diagnostics.extend(problems)
        bundle.rejected.append(doc)
        return None
    return doc


# --- compilation ----------------------------------------------------------------------


@dataclass(frozen=True)
class _RuleSource:
    """One rule as written, with the settings it inherits from its file's `defaults`."""

    doc: SourceDoc
    key: PathKey
    spec: dict[str, Any]
    settings: dict[str, Any]
    where: dict[str, PathKey]  # setting -> where it is written (on the rule or in `defaults`)
    category: str
    caps: tuple[Cap, ...]
    digest: str | None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.settings["channels"])


class _Compiler:
    """Compiles one bundle; what the Defaults and providers declare is kept on `self`
    once compiled, so each rule is checked against it without threading it through."""

    def __init__(self, bundle: LoadedBundle, runtime: CelRuntime) -> None:
        self.bundle = bundle
        self.runtime = runtime
        self.diagnostics: list[Diagnostic] = []
        self.names: dict[str, Origin] = {}
        self.cel_variables: frozenset[str] = frozenset()
        self.channels: Mapping[str, ChannelDef] = {}
        self.tiers: Mapping[str, Tier] = {}
        self.providers = ProviderCatalog(providers={}, routes={}, file="providers.yaml", loaded=False)
        self.templates: Mapping[tuple[str, str], list[Path]] = bundle.templates
        # False when the Defaults did not load: names of channels and tiers cannot be judged,
        # but everything else in the other files still is.
        self.declared = True

    def report(
        self, doc: SourceDoc, key: PathKey, code: DiagnosticCode, message: str, *, at_key: bool = False
    ) -> None:
        self.diagnostics.append(doc.diagnostic(key, code, message, at_key=at_key))

    def origin(self, doc: SourceDoc, key: PathKey) -> Origin:
        loc = doc.loc(key)
        return Origin(doc.name, loc.line, loc.col)

    def claim_name(self, doc: SourceDoc, key: PathKey, name: str, what: str) -> None:
        origin = self.origin(doc, key)
        if name in self.names:
            first = self.names[name]
            self.report(
                doc,
                key,
                "duplicate-name",
                f"{what} name {name!r} is already used at {first.format()}; "
                "rules, caps and constraints share one namespace",
            )
        else:
            self.names[name] = origin

    def duration(self, doc: SourceDoc, key: PathKey, text: str) -> dt.timedelta:
        try:
            return parse_duration(text)
        except ValueError as exc:  # the schema's pattern admits only valid durations
            self.report(doc, key, "invalid-duration", str(exc))
            return dt.timedelta(0)

    def condition(
        self, doc: SourceDoc, key: PathKey, source: str | None, on_error: str | None
    ) -> Condition | None:
        if source is None:
            return None
        origin = self.origin(doc, key)
        try:
            static_check(source)
            program = self.runtime.compile(source)
        except CelCompileError as exc:
            code = CEL_CODES[exc.kind]
            where = (
                f" (line {exc.line}, column {exc.column} of the expression)"
                if "\n" in source.strip()
                else f" (column {exc.column})"
            )
            self.report(doc, key, code, f"in CEL expression {source.strip()!r}: {exc.message}{where}")
            return None
        self.cel_variables |= program.variables
        return Condition(program=program, source=source.strip(), on_error=on_error == "match", origin=origin)

    # -- defaults --

    def compile_defaults(
        self, doc: SourceDoc
    ) -> tuple[
        Defaults,
        dict[str, ChannelDef],
        dict[str, Tier],
        dict[Priority, PrioritySettings],
        list[Cap],
        list[Constraint],
    ]:
        data = doc.data
        timezone = data.get("timezone", "UTC")
        try:
            check_zone(timezone)
        except ValueError as exc:
            self.report(doc, ("timezone",), "invalid-timezone", str(exc))
            timezone = "UTC"
        quiet = data.get("quiet_hours", {"start": "00:00", "end": "00:00"})
        defaults = Defaults(
            timezone=timezone,
            idempotency_window=self.duration(
                doc, ("idempotency_window",), data.get("idempotency_window", "24h")
            ),
            quiet_hours=DailyWindow.parse(quiet["start"], quiet["end"]),
            origin=self.origin(doc, ()),
        )
        channels = {
            name: ChannelDef(
                name=name,
                address=spec["address"],
                opt_in=spec.get("consent") == "opt_in",
                quiet_hours=spec.get("quiet_hours", True),
            )
            for name, spec in data["channels"].items()
        }
        tiers: dict[str, Tier] = {}
        for name, spec in data["tiers"].items():
            key: PathKey = ("tiers", name)
            retry = spec["retry"]
            tiers[name] = Tier(
                name=name,
                queue=spec["queue"],
                latency_target=self.duration(doc, (*key, "latency_target"), spec["latency_target"]),
                expiry=self.duration(doc, (*key, "expiry"), spec["expiry"]),
                cost_ceiling=spec.get("cost_ceiling"),
                retry=RetryPolicy(
                    schedule=tuple(
                        self.duration(doc, (*key, "retry", "schedule", i), d)
                        for i, d in enumerate(retry["schedule"])
                    ),
                    max_attempts=retry["max_attempts"],
                    jitter=retry.get("jitter", 0.0),
                    max_delay=self.duration(doc, (*key, "retry", "max_delay"), retry["max_delay"])
                    if "max_delay" in retry
                    else None,
                ),
                chunk_size=spec.get("jobs", {}).get("chunk_size", 1),
                origin=self.origin(doc, key),
                summary=f"queue {spec['queue']}, expiry {spec['expiry']}",
                at_least_once=spec.get("ambiguous", "at_most_once") == "at_least_once",
            )
        priorities: dict[Priority, PrioritySettings] = {}
        for priority in PRIORITIES:
            spec = data["priorities"][priority]
            key = ("priorities", priority)
            for i, channel in enumerate(spec["fallback"]):
                self.known_channel(doc, (*key, "fallback", i), channel, channels)
            priorities[priority] = PrioritySettings(
                bypass=frozenset(spec.get("bypass", ())),
                strategy=spec.get("strategy", "all"),
                fallback=tuple(spec["fallback"]),
                origin=self.origin(doc, key),
            )
        caps = [
            self.cap(doc, ("caps", i), spec, None, channels) for i, spec in enumerate(data.get("caps", []))
        ]
        constraints = [
            self.constraint(doc, ("constraints", i), spec, None, channels)
            for i, spec in enumerate(data.get("constraints", []))
        ]
        return defaults, channels, tiers, priorities, caps, constraints

    def known_channel(
        self,
        doc: SourceDoc,
        key: PathKey,
        channel: str,
        channels: Mapping[str, ChannelDef],
        *,
        at_key: bool = False,
    ) -> bool:
        if channel in channels or not self.declared:
            return True
        self.report(
            doc,
            key,
            "unknown-channel",
            f"unknown channel {channel!r}; the Defaults declare {', '.join(sorted(channels))}",
            at_key=at_key,
        )
        return False

    def cap(
        self,
        doc: SourceDoc,
        key: PathKey,
        spec: dict[str, Any],
        category: str | None,
        channels: Mapping[str, ChannelDef],
    ) -> Cap:
        self.claim_name(doc, (*key, "name"), spec["name"], "cap")
        for i, channel in enumerate(spec.get("channels", [])):
            self.known_channel(doc, (*key, "channels", i), channel, channels)
        return Cap(
            name=spec["name"],
            category=category,
            channels=frozenset(spec["channels"]) if "channels" in spec else None,
            events=tuple(spec["events"]) if "events" in spec else None,
            limit=spec["limit"],
            window=self.duration(doc, (*key, "window"), spec["window"]),
            overflow=spec.get("overflow", "suppress"),
            origin=self.origin(doc, key),
        )

    def constraint(
        self,
        doc: SourceDoc,
        key: PathKey,
        spec: dict[str, Any],
        category: str | None,
        channels: Mapping[str, ChannelDef],
    ) -> Constraint:
        self.claim_name(doc, (*key, "name"), spec["name"], "constraint")
        for i, channel in enumerate(spec["deny"]):
            self.known_channel(doc, (*key, "deny", i), channel, channels)
        return Constraint(
            name=spec["name"],
            category=category,
            events=tuple(spec["events"]) if "events" in spec else None,
            priorities=frozenset(spec["priorities"]) if "priorities" in spec else None,
            condition=self.condition(doc, (*key, "when"), spec.get("when"), spec.get("on_error")),
            deny=frozenset(spec["deny"]),
            reason=spec.get("reason", "policy"),
            detail=spec.get("detail") or spec.get("description") or f"denied by constraint {spec['name']}",
            origin=self.origin(doc, key),
        )

    # -- category policies --

    def compile_policy(self, doc: SourceDoc) -> tuple[list[Rule], list[Cap], list[Constraint]]:
        data = doc.data
        category = data["category"]
        caps = [
            self.cap(doc, ("caps", i), spec, category, self.channels)
            for i, spec in enumerate(data.get("caps", []))
        ]
        constraints = [
            self.constraint(doc, ("constraints", i), spec, category, self.channels)
            for i, spec in enumerate(data.get("constraints", []))
        ]
        file_defaults = data.get("defaults", {})
        rules = []
        for index, spec in enumerate(data["rules"]):
            key: PathKey = ("rules", index)
            settings: dict[str, Any] = {}
            where: dict[str, PathKey] = {}
            for name in RULE_SETTINGS:
                if name in spec:
                    settings[name], where[name] = spec[name], (*key, name)
                elif name in file_defaults:
                    settings[name], where[name] = file_defaults[name], ("defaults", name)
            source = _RuleSource(doc, key, spec, settings, where, category, tuple(caps), data.get("digest"))
            rule = self.rule(source)
            if rule is not None:
                rules.append(rule)
        return rules, caps, constraints

    def rule(self, src: _RuleSource) -> Rule | None:
        """One rule: every check runs (so every problem is reported), then the Rule is built."""
        self.claim_name(src.doc, (*src.key, "name"), src.name, "rule")
        if not self.rule_has_required_settings(src):
            return None
        ok = self.rule_channels_known(src)
        rule_tiers = self.rule_tiers(src)
        ok &= rule_tiers is not None
        route_providers = self.rule_providers(src)
        self.check_templates(src)
        match = src.spec["match"]
        condition = self.condition(
            src.doc, (*src.key, "match", "when"), match.get("when"), match.get("on_error")
        )
        if match.get("when") is not None and condition is None:
            ok = False
        if not ok or rule_tiers is None:
            return None
        return self.build_rule(src, rule_tiers, route_providers, condition)

    def rule_has_required_settings(self, src: _RuleSource) -> bool:
        ok = True
        for setting in ("tier", "channels"):
            if setting not in src.settings:
                self.report(
                    src.doc,
                    src.key,
                    "missing-setting",
                    f"rule {src.name!r} has no {setting!r}: set it on the rule or in the file's defaults",
                )
                ok = False
        return ok

    def rule_channels_known(self, src: _RuleSource) -> bool:
        """The rule's channels exist; `mute` and `fallback` name only channels the rule uses."""
        doc, where, rule_channels = src.doc, src.where, src.channels
        ok = True
        for i, channel in enumerate(rule_channels):
            ok &= self.known_channel(doc, (*where["channels"], i), channel, self.channels)
        for list_setting in ("mute", "fallback"):
            for i, channel in enumerate(src.settings.get(list_setting, [])):
                if (
                    self.known_channel(doc, (*where[list_setting], i), channel, self.channels)
                    and channel not in rule_channels
                ):
                    self.report(
                        doc,
                        (*where[list_setting], i),
                        "channel-not-used",
                        f"{list_setting} names {channel!r}, which rule {src.name!r} does not use "
                        f"(its channels: {', '.join(rule_channels)})",
                    )
        return ok

    def rule_tiers(self, src: _RuleSource) -> dict[str, Tier] | None:
        """The tier for each priority the rule can match, or None after reporting why not."""
        doc, where = src.doc, src.where
        tier_spec = src.settings["tier"]
        rule_tiers: dict[str, Tier] = {}
        ok = True
        for priority in PRIORITIES:
            tier_name = tier_spec if isinstance(tier_spec, str) else tier_spec.get(priority)
            if tier_name is None or not self.declared:
                continue
            if tier_name not in self.tiers:
                tier_key = where["tier"] if isinstance(tier_spec, str) else (*where["tier"], priority)
                self.report(
                    doc,
                    tier_key,
                    "unknown-tier",
                    f"unknown tier {tier_name!r}; the Defaults declare {', '.join(sorted(self.tiers))}",
                )
                ok = False
                continue
            rule_tiers[priority] = self.tiers[tier_name]
        needed = set(src.spec["match"].get("priorities") or PRIORITIES)
        if not self.declared:
            return None
        if ok and not needed <= set(rule_tiers):
            missing = ", ".join(p for p in PRIORITIES if p in needed - set(rule_tiers))
            self.report(
                doc,
                where["tier"],
                "missing-tier",
                f"rule {src.name!r} can match priority {missing} but names no tier for it",
            )
            ok = False
        return rule_tiers if ok else None

    def rule_providers(self, src: _RuleSource) -> dict[str, tuple[str, ...]]:
        """The rule's own provider chains, and a route for every channel it delivers on."""
        doc, where, providers = src.doc, src.where, self.providers
        route_providers: dict[str, tuple[str, ...]] = {}
        for channel, chain in src.settings.get("providers", {}).items():
            pkey = (*where["providers"], channel)
            if channel not in src.channels:
                self.report(
                    doc,
                    pkey,
                    "channel-not-used",
                    f"providers given for {channel!r}, which rule {src.name!r} does not use",
                    at_key=True,
                )
            for i, provider in enumerate(chain):
                self.known_provider(doc, (*pkey, i), provider, channel)
            route_providers[channel] = tuple(chain)
        for channel in src.channels:
            if (
                providers.loaded
                and channel in self.channels
                and channel not in route_providers
                and channel not in providers.routes
            ):
                self.report(
                    doc,
                    where["channels"],
                    "unknown-provider",
                    f"no provider delivers channel {channel!r}: add a route to {providers.file}",
                )
        return route_providers

    def known_provider(self, doc: SourceDoc, key: PathKey, provider: str, channel: str) -> None:
        providers = self.providers
        if not providers.loaded:
            return  # providers.yaml has its own diagnostics; don't cascade
        info = providers.providers.get(provider)
        if info is None:
            self.report(
                doc,
                key,
                "unknown-provider",
                f"unknown provider {provider!r}; {providers.file} declares "
                f"{', '.join(sorted(providers.providers))}",
            )
        elif info.channel != channel:
            self.report(
                doc, key, "provider-channel", f"provider {provider!r} delivers {info.channel}, not {channel}"
            )

    def build_rule(
        self,
        src: _RuleSource,
        rule_tiers: dict[str, Tier],
        route_providers: dict[str, tuple[str, ...]],
        condition: Condition | None,
    ) -> Rule:
        doc, where, settings, match = src.doc, src.where, src.settings, src.spec["match"]
        priorities = match.get("priorities")
        batch = settings.get("batch")
        window = settings.get("delivery_window")
        return Rule(
            name=src.name,
            category=src.category,
            description=src.spec.get("description", ""),
            origin=self.origin(doc, src.key),
            patterns=tuple(match["events"]),
            priorities=frozenset(priorities) if priorities else None,
            condition=condition,
            tiers=rule_tiers,
            channels=src.channels,
            mute=frozenset(settings.get("mute", ())),
            bypass=frozenset(settings.get("bypass", ())),
            strategy=settings.get("strategy"),
            fallback=tuple(settings["fallback"]) if "fallback" in settings else None,
            dedup=self.duration(doc, where["dedup"], settings["dedup"]) if "dedup" in settings else None,
            batch=Batching(
                window=self.duration(doc, (*where["batch"], "window"), batch["window"]),
                max_size=batch["max"],
                by=batch.get("by", "event"),
                origin=self.origin(doc, where["batch"]),
            )
            if batch
            else None,
            delivery_window=_weekly(window) if window else None,
            quiet_hours=settings.get("quiet_hours", "respect") == "respect",
            template=settings.get("template"),
            providers=route_providers,
            caps=src.caps,
            digest=src.digest,
            locations={setting: self.origin(doc, path) for setting, path in where.items()},
        )

    def check_templates(self, src: _RuleSource) -> None:
        """Every channel a rule can deliver on needs a template for every event it names.

        A rule naming a pattern (`order.*`) without an explicit `template` is resolved per
        event at run time; the checker then requires at least one template for the pattern.
        """
        doc, key, templates = src.doc, src.key, self.templates
        events = src.spec["match"]["events"]
        template = src.settings.get("template")
        if template is not None:
            names = [(template, src.where["template"])]
        else:
            names = [(e, (*key, "match", "events", i)) for i, e in enumerate(events) if not e.endswith("*")]
            for i, pattern in enumerate(events):
                if pattern.endswith("*"):
                    prefix = pattern[:-1]
                    if not any(t.startswith(prefix) or pattern == "*" for t, _ in templates):
                        self.report(
                            doc,
                            (*key, "match", "events", i),
                            "unknown-template",
                            f"no template directory matches {pattern!r}; add templates/<event>/ "
                            "or give the rule a `template`",
                        )
        muted = frozenset(src.settings.get("mute", ()))
        delivered = [c for c in src.channels if c in self.channels and c not in muted]
        for template_name, tkey in names:
            for channel in delivered:
                if (template_name, channel) not in templates:
                    self.report(
                        doc,
                        tkey,
                        "unknown-template",
                        f"rule {src.name!r} delivers {channel} but templates/{template_name}/"
                        f"{channel}.yaml does not exist",
                    )

    # -- providers --

    def compile_providers(self, doc: SourceDoc | None, channels: Mapping[str, ChannelDef]) -> ProviderCatalog:
        if doc is None:
            return ProviderCatalog(providers={}, routes={}, file="providers.yaml", loaded=False)
        data = doc.data
        providers = {
            name: ProviderInfo(
                name=name,
                channel=spec["channel"],
                adapter=spec["adapter"],
                cost=float(spec["cost"]),
                platforms=frozenset(spec["platforms"]) if "platforms" in spec else None,
                origin=self.origin(doc, ("providers", name)),
            )
            for name, spec in data["providers"].items()
        }
        for name, info in providers.items():
            self.known_channel(doc, ("providers", name, "channel"), info.channel, channels)
        routes: dict[str, tuple[str, ...]] = {}
        for channel, chain in data["routes"].items():
            self.known_channel(doc, ("routes", channel), channel, channels, at_key=True)
            for i, provider in enumerate(chain):
                known = providers.get(provider)
                if known is None:
                    self.report(
                        doc,
                        ("routes", channel, i),
                        "unknown-provider",
                        f"unknown provider {provider!r}; declared: {', '.join(sorted(providers))}",
                    )
                elif known.channel != channel:
                    self.report(
                        doc,
                        ("routes", channel, i),
                        "provider-channel",
                        f"provider {provider!r} delivers {known.channel}, not {channel}",
                    )
            routes[channel] = tuple(chain)
        self.diagnostics += settings_diagnostics(doc)
        return ProviderCatalog(providers=providers, routes=routes, file=doc.name)

    # -- schedules --

    def compile_schedules(
        self,
        doc: SourceDoc,
        written: list[dict[str, Any]],
        templates: Mapping[tuple[str, str], list[Path]],
    ) -> list[Schedule]:
        """A category's `schedules:`; each error points at the offending value.

        `written` is the `match` of every rule in the bundle, compiled or not, so a
        rule with its own error does not also make a schedule's event "unknown".
        """
        found: list[Schedule] = []
        for index, spec in enumerate(doc.data.get("schedules", [])):
            key: PathKey = ("schedules", index)
            name = spec["name"]
            self.claim_name(doc, (*key, "name"), name, "schedule")
            ok = True
            try:
                cron = parse_cron(spec["cron"])
            except CronError as exc:
                self.report(doc, (*key, "cron"), "cron", str(exc))
                cron, ok = spec["cron"], False
            event, priority = spec["event"], spec.get("priority", "normal")
            if not any(
                glob_event(p, event) and priority in m.get("priorities", PRIORITIES)
                for m in written
                for p in m["events"]
            ):
                self.report(
                    doc,
                    (*key, "event"),
                    "unknown-event",
                    f"schedule {name!r} fires {event!r} at priority {priority}, which no rule routes",
                )
                ok = False
            elif not any(t == event for t, _ in templates):
                self.report(
                    doc,
                    (*key, "event"),
                    "unknown-template",
                    f"schedule {name!r} fires {event!r}, but templates/{event}/ does not exist",
                )
                ok = False
            segment = self.condition(doc, (*key, "segment"), spec["segment"], spec["on_error"])
            if segment is None:
                ok = False
            elif extra := sorted(segment.program.variables - {"user", "now"}):
                self.report(
                    doc,
                    (*key, "segment"),
                    "cel-check",
                    f"in CEL expression {segment.source!r}: a schedule's segment sees only `user` and "
                    f"`now` (the occurrence), not {', '.join(f'`{v}`' for v in extra)}",
                )
                ok = False
            data = spec.get("data", {})
            for problem in _placeholder_problems(data):
                self.report(doc, (*key, "data"), "schedule-data", problem)
                ok = False
            if not ok or segment is None:
                continue
            found.append(
                Schedule(
                    name=name,
                    category=doc.data["category"],
                    description=spec.get("description", ""),
                    cron=cron,
                    event=event,
                    segment=segment,
                    data=data,
                    priority=priority,
                    misfire=self.duration(doc, (*key, "misfire"), spec.get("misfire", "1h")),
                    origin=self.origin(doc, key),
                )
            )
        return found

    # -- whole-bundle checks --

    def check_ambiguity(self, rules: list[Rule], docs: dict[str, SourceDoc]) -> None:
        """Two rules of equal specificity that can both match the same intent are an error.

        Equal specificity means the same event pattern with the same kinds of filters; they
        can both match unless their priority filters are disjoint. CEL conditions cannot be
        proven disjoint, so two conditional rules on one pattern are ambiguous too.
        """
        for a, b in combinations(rules, 2):
            shared = set(a.patterns) & set(b.patterns)
            if not shared:
                continue
            if (a.priorities is not None) != (b.priorities is not None):
                continue
            if (a.condition is not None) != (b.condition is not None):
                continue
            if a.priorities is not None and b.priorities is not None and not (a.priorities & b.priorities):
                continue
            pattern = sorted(shared)[0]
            later, earlier = (
                (b, a) if (b.origin.file, b.origin.line) >= (a.origin.file, a.origin.line) else (a, b)
            )
            self.diagnostics.append(
                Diagnostic(
                    file=later.origin.file,
                    line=later.origin.line,
                    col=later.origin.col,
                    code="ambiguous-rules",
                    message=f"rules {earlier.name!r} ({earlier.origin.format()}) and {later.name!r} are "
                    f"equally specific for {pattern!r} and can both match; narrow one (an exact event, "
                    "a disjoint priority filter) or merge them",
                )
            )

    def check_digests(self, policy_docs: list[SourceDoc], rules: list[Rule]) -> None:
        for doc in policy_docs:
            digest = doc.data.get("digest")
            for index, cap in enumerate(doc.data.get("caps", [])):
                if cap.get("overflow") == "digest" and digest is None:
                    self.report(
                        doc,
                        ("caps", index, "overflow"),
                        "missing-digest",
                        f"cap {cap['name']!r} overflows into a digest, but the policy names no "
                        "`digest` event to fold capped messages into",
                    )
            # Judge by every rule written, compiled or not: a rule with another error must not
            # also make its digest "unknown".
            written = [p for d in policy_docs for r in d.data["rules"] for p in r["match"]["events"]]
            if digest is not None and not any(glob_event(p, digest) for p in written):
                self.report(
                    doc, ("digest",), "unknown-digest", f"no rule matches the digest event {digest!r}"
                )


def _weekly(spec: dict[str, Any]) -> WeeklyWindow:
    span = DailyWindow.parse(spec["start"], spec["end"])
    return WeeklyWindow(
        days=frozenset(WEEKDAYS.index(d) for d in spec["days"]), start=span.start, end=span.end
    )


SCHEDULE_PLACEHOLDERS = frozenset({"week", "date", "occurrence", "schedule"})


def _placeholder_problems(value: Any) -> list[str]:
    """`$name` placeholders in a schedule's data that the scheduler would not fill."""
    if isinstance(value, str):
        try:
            names = string.Template(value).get_identifiers()
        except ValueError as exc:
            return [f"{value!r}: {exc}"]
        unknown = sorted(set(names) - SCHEDULE_PLACEHOLDERS)
        if not string.Template(value).is_valid():
            return [f"{value!r} has a `$` that is not a placeholder; write `$$` for a dollar sign"]
        return [
            f"{value!r} uses ${n}; a schedule's data may use "
            + ", ".join(f"${p}" for p in sorted(SCHEDULE_PLACEHOLDERS))
            for n in unknown
        ]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _placeholder_problems(v)]
    if isinstance(value, list):
        return [p for v in value for p in _placeholder_problems(v)]
    return []


def compile_policy(
    bundle: LoadedBundle, runtime: CelRuntime, version: str
) -> tuple[CompiledPolicy | None, list[Diagnostic]]:
    """Compile what loaded, reporting every problem; the policy is built from what compiled.

    Without a loaded Defaults there is no policy, but the other files are still compiled
    (CEL, names, providers, schedules) for their own diagnostics. With problems, the policy
    holds every rule that compiled: the checker renders templates and runs the test cases
    that do not depend on a broken file against it; it never serves.
    """
    compiler = _Compiler(bundle, runtime)
    for extra in bundle.defaults[1:]:
        compiler.report(
            extra,
            ("kind",),
            "duplicate-defaults",
            f"a bundle has one Defaults file; the first is {bundle.defaults[0].name}",
        )
    if not bundle.defaults:
        compiler.declared = False
        compiler.providers = compiler.compile_providers(bundle.providers, {})
        _compile_categories(compiler, bundle, [])
        return None, compiler.diagnostics
    defaults, channels, tiers, priorities, caps, constraints = compiler.compile_defaults(bundle.defaults[0])
    providers = compiler.compile_providers(bundle.providers, channels)
    compiler.channels, compiler.tiers, compiler.providers = channels, tiers, providers
    rules, schedules = _compile_categories(compiler, bundle, constraints)
    diagnostics = compiler.diagnostics
    policy = CompiledPolicy(
        version=version,
        runtime=runtime.name,
        defaults=defaults,
        channels=channels,
        tiers=tiers,
        priorities=priorities,
        caps=tuple(caps),
        constraints=tuple(constraints),
        rules=tuple(rules),
        providers=providers,
        templates=frozenset(bundle.templates),
        files=tuple(sorted(bundle.files, key=lambda f: f.path)),
        cel_variables=compiler.cel_variables,
        schedules=tuple(schedules),
    )
    return policy, diagnostics


def _compile_categories(
    compiler: _Compiler, bundle: LoadedBundle, constraints: list[Constraint]
) -> tuple[list[Rule], list[Schedule]]:
    """Every category's rules, constraints (appended to `constraints`) and schedules."""
    rules: list[Rule] = []
    categories: dict[str, SourceDoc] = {}
    docs: dict[str, SourceDoc] = {}
    for doc in bundle.policies:
        docs[doc.name] = doc
        category = doc.data["category"]
        if category in categories:
            compiler.report(
                doc,
                ("category",),
                "duplicate-category",
                f"category {category!r} is already defined in {categories[category].name}",
            )
            continue
        categories[category] = doc
        file_rules, _caps, file_constraints = compiler.compile_policy(doc)
        rules += file_rules
        constraints += file_constraints
    compiler.check_ambiguity(rules, docs)
    compiler.check_digests(bundle.policies, rules)
    written = [r["match"] for d in bundle.policies for r in d.data["rules"]]
    schedules = [
        schedule
        for doc in bundle.policies
        for schedule in compiler.compile_schedules(doc, written, bundle.templates)
    ]
    return rules, schedules
