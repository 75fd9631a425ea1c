"""`providers.yaml` against each adapter's declared settings and credentials, before deploy.

The schema says a provider's `settings` map holds literals or `{env: NAME, default: ...}`;
only the adapter knows which keys it reads, of which type, and which credentials it needs
(`gateway/providers/settings.py`, the declarations its `from_spec` decodes with). So a
stray key, a port that is no number, Twilio without `settings.from` or without
`credentials.auth_token` is reported here, at its line and column, instead of stopping a
worker at start (or, for an unknown key, never being noticed). A value read from a
variable without a default is only known at start, where the same declaration checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.policy.diagnostics import Diagnostic
from gateway.policy.source import PathKey, SourceDoc
from gateway.providers import settings as declared


def settings_diagnostics(doc: SourceDoc) -> list[Diagnostic]:
    """Every provider's and profile's settings, and every provider's credentials."""
    found: list[Diagnostic] = []
    for name, entry in doc.data.get("providers", {}).items():
        found += _entry(doc, ("providers", name), entry, label=f"provider {name!r}")
    for name, entry in (doc.data.get("profiles") or {}).items():
        if entry.get("adapter") in declared.PROFILE_ADAPTERS:  # any other is refused at start
            found += _entry(doc, ("profiles", name), entry, label=f"profile {name!r}")
    return found


def _entry(doc: SourceDoc, key: PathKey, entry: Mapping[str, Any], *, label: str) -> list[Diagnostic]:
    kind = declared.SETTINGS.get(entry.get("adapter", ""))
    if kind is None:
        return []  # the schema's enum reports an unknown adapter
    settings = entry.get("settings") or {}
    problems = declared.problems(kind, {k: _static(v) for k, v in settings.items()})
    if key[0] == "providers":  # a profile swaps transports; credentials stay the providers'
        problems += declared.credential_problems(kind, entry.get("credentials") or {})
    what = f"{label} (adapter {entry['adapter']})"
    return [_located(doc, key, entry, f"{what}: {problem.message}", problem) for problem in problems]


def _static(value: Any) -> Any:
    """What can be known of a value before start: a literal, or an `{env}`'s default."""
    if isinstance(value, dict) and "env" in value:
        return value["default"] if value.get("default") is not None else declared.UNRESOLVED
    return value


def _located(
    doc: SourceDoc, key: PathKey, entry: Mapping[str, Any], message: str, problem: declared.SettingProblem
) -> Diagnostic:
    section = (*key, problem.section)
    if problem.code.startswith("missing-"):
        # Where it should be written: the section when there is one, else the entry.
        where = section if problem.section in entry else key
        return doc.diagnostic(where, problem.code, message, at_key=where == section)
    if problem.code.startswith("unknown-"):
        return doc.diagnostic((*section, problem.key), problem.code, message, at_key=True)
    value = entry[problem.section][problem.key]
    inner = (*section, problem.key, "default") if isinstance(value, dict) else (*section, problem.key)
    return doc.diagnostic(inner, problem.code, message)
