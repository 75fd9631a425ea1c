"""`./dev` keeps the `.venv` it made while its interpreter is unchanged, even when Python is
reached through a pyenv-style shim (a script, not the interpreter), and `./dev shell` puts
`notigate` on PATH as the README says.

Regression: uv was handed the shim's path, found that `.venv`'s interpreter "does not satisfy
the request" and rebuilt `.venv` on every run (about 50 s, pulling it from under a running
`./dev run`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

VENV = REPO / ".venv"


def fingerprint() -> tuple[int, int, int]:
    """What a rebuild changes: the interpreter link's inode, and pyvenv.cfg's inode and mtime."""
    python, config = (VENV / "bin" / "python").lstat(), (VENV / "pyvenv.cfg").stat()
    return python.st_ino, config.st_ino, config.st_mtime_ns


def test_dev_shell_reuses_the_venv_through_a_shim_and_puts_notigate_on_path(tmp_path: Path) -> None:
    if Path(sys.prefix) != VENV:
        pytest.skip("runs only from the .venv ./dev made: it would otherwise build one (minutes)")
    shim = tmp_path / "shims" / "python3"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{os.path.realpath(sys.executable)}" "$@"\n')
    shim.chmod(0o755)
    seen = tmp_path / "seen"
    shell = tmp_path / "shell"
    shell.write_text(f'#!/bin/sh\ncommand -v notigate > "{seen}"\n')
    shell.chmod(0o755)
    before = fingerprint()
    done = subprocess.run(
        [str(REPO / "dev"), "shell"],
        env={**os.environ, "NOTIGATE_PYTHON": str(shim), "SHELL": str(shell)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert fingerprint() == before, "./dev rebuilt .venv"
    assert seen.read_text().strip() == str(VENV / "bin" / "notigate")
