"""The two errors of the CEL seam, in a module of their own so the checks on either side of
the seam (`cel`, `cel_lint`) share them without importing each other."""

from __future__ import annotations

from typing import Literal

# `syntax`: the text does not parse; `check`: it parses but refers to something undeclared,
# calls a helper wrongly or passes it a literal it cannot use. Diagnostics are `cel-<kind>`.
CelErrorKind = Literal["syntax", "check"]


class CelCompileError(Exception):
    """A CEL expression that does not parse or refers to something undeclared."""

    def __init__(self, message: str, line: int = 1, column: int = 1, kind: CelErrorKind = "check") -> None:
        super().__init__(message)
        self.message = message
        self.line = line  # 1-based, within the expression
        self.column = column  # 1-based, within the expression's line
        self.kind: CelErrorKind = kind


class CelEvalError(Exception):
    """Evaluation failed for this input (missing field, type mismatch, bad helper argument)."""
