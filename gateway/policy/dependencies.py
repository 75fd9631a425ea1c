"""Which policy test cases a broken file could change, so `check` runs all the others.

`notigate check` reports every problem in one run, test failures included; but a case whose
event a broken policy file routes could only fail for that file's sake, a misleading second
report of the same mistake. Such a case is skipped, naming the file. A broken Defaults or
providers file touches every decision, and a file too broken to read its rules could route
any event: then no case runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.policy.cel_functions import glob_event
from gateway.policy.compiler import BundlePaths, LoadedBundle
from gateway.policy.diagnostics import display_path
from gateway.policy.source import SourceDoc
from gateway.policy.suites import Case

CaseFilter = Callable[[Case], str | None]  # why a case cannot run, or None

_SUITE_KIND = re.compile(r"^kind:\s*['\"]?PolicyTestSuite\b", re.MULTILINE)


def blocked_cases(paths: BundlePaths, bundle: LoadedBundle, broken: Iterable[str]) -> CaseFilter:
    """A filter naming the broken file each case depends on; `broken` are display paths."""
    docs = {doc.name: doc for doc in [*bundle.policies, *bundle.rejected, *bundle.suites]}
    everything: str | None = None
    patterns: list[tuple[str, str]] = []  # (event pattern, file)
    for name in sorted(set(broken)):
        doc = docs.get(name)
        kind = _kind(doc, name)
        if kind == "PolicyTestSuite":
            continue  # a suite's own problems are reported for it; other suites still run
        routed = _routed_patterns(doc) if kind == "Policy" else None
        if routed is None:
            everything = everything or name
            continue
        patterns += [(pattern, name) for pattern in routed]
    if display_path(paths.providers) in set(broken):
        everything = everything or display_path(paths.providers)

    def reason(case: Case) -> str | None:
        if everything is not None:
            return f"{everything} has problems"
        for pattern, name in patterns:
            if glob_event(pattern, case.intent.event):
                return f"{name} routes {case.intent.event!r} and has problems"
        return None

    return reason


def _kind(doc: SourceDoc | None, name: str) -> str | None:
    if doc is not None:
        data = doc.data
        return str(data.get("kind")) if isinstance(data, dict) else None
    try:  # the file did not parse: judge by its text
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return "PolicyTestSuite" if _SUITE_KIND.search(text) else None


def _routed_patterns(doc: SourceDoc | None) -> list[str] | None:
    """The event patterns a policy file's rules match, or None when they cannot be read."""
    if doc is None:
        return None
    rules: Any = doc.data.get("rules")
    if not isinstance(rules, list):
        return None
    found: list[str] = []
    for rule in rules:
        events = rule.get("match", {}).get("events") if isinstance(rule, dict) else None
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            return None
        found += events
    return found
