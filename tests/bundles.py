"""Copies of the shipped policy bundle that a test may edit (reload, diff, the CI kit)."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.policy.compiler import BundlePaths
from tests.conftest import REPO

RULE = "  - name: order-updates\n"


def copy_bundle(target: Path, *, with_tests: bool = False) -> BundlePaths:
    """The shipped bundle (policies, templates, providers.yaml) under `target`."""
    ignore = None if with_tests else shutil.ignore_patterns("tests")
    shutil.copytree(REPO / "policies", target / "policies", ignore=ignore)
    shutil.copytree(REPO / "templates", target / "templates")
    shutil.copy(REPO / "providers.yaml", target / "providers.yaml")
    return BundlePaths.for_policies(target / "policies")


def edit(paths: BundlePaths, old: str, new: str, file: str = "transactional.yaml") -> None:
    path = paths.policies / file
    text = path.read_text()
    if old not in text:
        raise AssertionError(f"{old!r} is not in {path}")
    path.write_text(text.replace(old, new, 1))


def email_only(paths: BundlePaths) -> None:
    """order-updates sends email and in-app only: a change every decision of order.* shows."""
    edit(paths, RULE, RULE + "    channels: [email, in_app]\n")


def break_cel(paths: BundlePaths) -> None:
    """order-updates gets a condition that does not parse: a change check refuses."""
    end = '      events: ["order.*"]\n\n  - name: digital-order-updates'
    edit(paths, end, end.replace("\n\n", '\n      when: "intent.("\n\n'))
