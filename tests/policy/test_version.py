"""The policy version: the git commit, marked dirty when the bundle differs, else a content hash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.policy.checker import load_policy
from gateway.policy.compiler import BundlePaths
from tests.conftest import REPO

GIT = shutil.which("git")


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    shutil.copy2(REPO / "providers.yaml", tmp_path)
    return tmp_path


def _version(root: Path) -> str:
    return load_policy(BundlePaths.for_policies(root / "policies")).version


def test_outside_git_the_version_is_a_content_hash(repo: Path) -> None:
    first = _version(repo)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 12
    assert _version(repo) == first
    marketing = repo / "policies" / "marketing.yaml"
    marketing.write_text(marketing.read_text() + "\n# a comment changes the content\n")
    assert _version(repo) != first


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_in_git_the_version_is_the_commit_and_dirty_changes_show(repo: Path) -> None:
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "policies")
    commit = _git(repo, "rev-parse", "--short=12", "HEAD")
    assert _version(repo) == commit

    template = repo / "templates" / "order.shipped" / "sms.yaml"
    template.write_text(template.read_text().replace("shipped with", "left with"))
    dirty = _version(repo)
    assert dirty.startswith(f"{commit}-dirty+")
    template.write_text(template.read_text().replace("left with", "went with"))
    assert _version(repo).startswith(f"{commit}-dirty+") and _version(repo) != dirty

    (repo / "README.md").write_text("not part of the bundle\n")
    _git(repo, "checkout", "--", "templates")
    assert _version(repo) == commit


def test_the_version_is_stamped_on_every_decision(repo: Path) -> None:
    import datetime as dt

    from gateway.model import Intent, UserState
    from gateway.policy.engine import decide

    policy = load_policy(BundlePaths.for_policies(repo / "policies"))
    decision = decide(
        Intent(event="order.shipped", user_id="u"),
        UserState(user_id="u"),
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        [],
        policy,
    )
    assert decision.policy_version == policy.version
