"""The diagnostic codes are one registry (`DiagnosticCode`), and the docs list every one."""

from __future__ import annotations

import re

from gateway.policy.diagnostics import DIAGNOSTIC_CODES
from tests.conftest import REPO


def test_every_code_is_documented_for_policy_authors() -> None:
    documented = set()
    for doc in ("docs/policies.md", "docs/templates.md"):
        documented |= set(re.findall(r"`([a-z]+(?:-[a-z]+)*)`", (REPO / doc).read_text(encoding="utf-8")))
    assert sorted(set(DIAGNOSTIC_CODES) - documented) == []
