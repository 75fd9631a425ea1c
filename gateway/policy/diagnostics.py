"""Problems found in a policy bundle, each pinned to a file, line and column.

Every stage of loading (YAML, schema, CEL, references, ambiguity, test suites) reports
through `Diagnostic` so `notigate check` can print them all, sorted, in one run, and the
server's startup refuses a bundle through the very same list.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal, get_args

import msgspec

from gateway.providers.settings import SettingProblemCode

# Every code a Diagnostic may carry, declared once: mypy holds each call site to this list,
# and tests/policy/test_diagnostics.py holds docs/policies.md's and templates.md's tables to it.
DiagnosticCode = Literal[
    # reading files
    "unreadable",
    "missing-directory",
    "missing-file",
    "yaml-syntax",
    "yaml-document",
    "yaml-duplicate-key",
    "yaml-key",
    "yaml-merge",
    "schema",
    # bundle structure and references
    "missing-defaults",
    "duplicate-defaults",
    "duplicate-category",
    "duplicate-name",
    "invalid-timezone",
    "invalid-duration",
    "unknown-channel",
    "unknown-tier",
    "missing-tier",
    "missing-setting",
    "channel-not-used",
    "unknown-template",
    "unknown-provider",
    "provider-channel",
    # providers.yaml against each adapter's declared settings and credentials
    SettingProblemCode,
    "ambiguous-rules",
    "cel-syntax",
    "cel-check",
    "cron",
    "unknown-event",
    "schedule-data",
    "missing-digest",
    "unknown-digest",
    # templates
    "template",
    "template-syntax",
    "template-default",
    "template-example",
    "template-render",
    "sms-too-long",
    "push-too-large",
    "sms-segments",  # a note, not a problem
    # test suites
    "test-invalid",
    "test-failed",
    "coverage-below",
]
DIAGNOSTIC_CODES: tuple[DiagnosticCode, ...] = get_args(DiagnosticCode)

# Problems that say the bundle is valid but its tests do not pass: `check` exits 3 on these
# alone, 1 when anything else is wrong, so CI can tell "cannot go live" from "tests fail".
TEST_FAILURE_CODES: frozenset[DiagnosticCode] = frozenset({"test-failed", "coverage-below"})


class Diagnostic(msgspec.Struct, frozen=True, order=True, kw_only=True):
    file: str
    line: int
    col: int
    code: DiagnosticCode
    message: str

    @classmethod
    def of_whole(cls, path: Path, code: DiagnosticCode, message: str) -> Diagnostic:
        """A problem of a whole file or directory (missing, below a threshold): at 1:1."""
        return cls(file=display_path(path), line=1, col=1, code=code, message=message)

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.code}: {self.message}"


class PolicyError(Exception):
    """A policy bundle that must not go live; carries every problem found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics)
        super().__init__(self.summary())

    def summary(self) -> str:
        count = len(self.diagnostics)
        head = f"policy bundle rejected: {count} problem{'s' if count != 1 else ''}"
        return "\n".join([head, *(d.format() for d in self.diagnostics)])


def display_path(path: Path) -> str:
    """A path as people expect to read it: relative to the working directory when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)
