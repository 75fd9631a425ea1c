"""The policy version stamped on every decision.

Inside a git work tree it is the short commit of HEAD, suffixed `-dirty+<hash>` when any
file of the bundle differs from that commit (so two different uncommitted edits never
share a version). Outside git it is a hash of the bundle's contents. Either way it is
computed once, when the bundle is loaded, never per request.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


def content_hash(files: Sequence[Path], root: Path | None = None) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        name = str(path.relative_to(root)) if root and path.is_relative_to(root) else path.name
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def policy_version(files: Sequence[Path], directory: Path) -> str:
    """`<commit>`, `<commit>-dirty+<hash>`, or `sha256:<hash>` outside a git work tree."""
    resolved = [p.resolve() for p in files]
    git = shutil.which("git")
    top = _git(git, directory, "rev-parse", "--show-toplevel") if git else None
    if git and top:
        root = Path(top)
        commit = _git(git, root, "rev-parse", "--short=12", "HEAD")
        if commit:
            inside = [str(p.relative_to(root)) for p in resolved if p.is_relative_to(root)]
            status = (
                _git(git, root, "status", "--porcelain", "--untracked-files=all", "--", *inside)
                if inside
                else ""
            )
            if status is None or status:
                return f"{commit}-dirty+{content_hash(resolved, root)[:8]}"
            return commit
    return f"sha256:{content_hash(resolved, directory.resolve())}"


def _git(git: str | None, cwd: Path, *args: str) -> str | None:
    if git is None or not cwd.exists():
        return None
    try:
        done = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
            [git, *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
