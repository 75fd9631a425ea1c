"""Problems found in a policy bundle, each pinned to a file, line and column.

Every stage of loading (YAML, schema, CEL, references, ambiguity, test suites) reports
through `Diagnostic` so `notigate check` can print them all, sorted, in one run, and the
server's startup refuses a bundle through the very same list.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import msgspec

# Problems that say the bundle is valid but its tests do not pass: `check` exits 3 on these
# alone, 1 when anything else is wrong, so CI can tell "cannot go live" from "tests fail".
TEST_FAILURE_CODES = frozenset({"test-failed", "coverage-below"})


class Diagnostic(msgspec.Struct, frozen=True, order=True, kw_only=True):
    file: str
    line: int
    col: int
    code: str
    message: str

    @classmethod
    def of_whole(cls, path: Path, code: str, message: str) -> Diagnostic:
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
