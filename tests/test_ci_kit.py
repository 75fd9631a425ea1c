"""The CI kit for policy repositories: examples/policy-repo/, its CI files and the installed wheel.

The wheel test builds notigate's wheel with `uv build`, installs it into a fresh virtual
environment and runs the example repository's CI steps there, in a directory holding only
`policies/`, `templates/` and `providers.yaml`: what a product team's CI does. It takes ~20-30 s
(a wheel build and three commands, each compiling the bundle), the one such test. The
wheel's dependencies come from this checkout's locked environment (a `.pth` file) rather than
from PyPI, so the test runs offline; notigate itself, schemas included, comes from the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from gateway.policy.compiler import BundlePaths
from tests.bundles import email_only
from tests.conftest import REPO

EXAMPLE = REPO / "examples" / "policy-repo"
WORKFLOW = EXAMPLE / ".github" / "workflows" / "policies.yml"
GITLAB = EXAMPLE / ".gitlab-ci.yml"


def run(*args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        command = " ".join(map(str, args))
        raise AssertionError(f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.mark.parametrize(
    ("path", "schema"), [(WORKFLOW, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")]
)
def test_the_example_ci_files_validate_against_the_published_schemas(path: Path, schema: str) -> None:
    """check-jsonschema ships copies of the GitHub workflow and GitLab CI schemas: no network."""
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = run(checker, "--builtin-schema", schema, path, cwd=REPO)
    assert "ok -- validation done" in done.stdout


def test_the_ci_files_run_the_toolchains_steps() -> None:
    """Both CI files check, test with coverage and diff against the base; the hooks run check."""
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["policies"]
    steps = " ".join(step.get("run", "") for step in job["steps"])
    gitlab = " ".join(yaml.safe_load(GITLAB.read_text())["policies"]["script"])
    for commands in (steps, gitlab):
        assert "notigate check" in commands
        assert "notigate test --coverage --min-coverage 100" in commands
        assert "notigate diff" in commands and "--format markdown" in commands
    assert 'notigate diff "origin/${{ github.base_ref }}"' in steps
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    local = yaml.safe_load((EXAMPLE / ".pre-commit-config.yaml").read_text())["repos"][0]["hooks"]
    assert [h["entry"] for h in hooks] == [h["entry"] for h in local] == ["notigate check"]
    assert all(h["pass_filenames"] is False for h in [*hooks, *local])


def _uv() -> str:
    found = shutil.which("uv") or str(REPO / ".dev" / "tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is needed to build the wheel: run ./dev test, which installs it")
    return found


def _installed_wheel(tmp: Path) -> Path:
    """A virtual environment with notigate's wheel installed; returns its `notigate`."""
    uv = _uv()
    run(uv, "build", "--wheel", "--out-dir", tmp / "dist", cwd=REPO)
    wheel = next((tmp / "dist").glob("notigate-*.whl"))
    run(uv, "venv", "--quiet", "--python", sys.executable, tmp / "venv", cwd=tmp)
    python = tmp / "venv" / "bin" / "python"
    run(uv, "pip", "install", "--quiet", "--offline", "--no-deps", "--python", python, wheel, cwd=tmp)
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp).stdout
    (Path(site.strip()) / "locked_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return tmp / "venv" / "bin" / "notigate"


def test_a_policy_only_repository_passes_its_ci_steps_with_the_installed_wheel(tmp_path: Path) -> None:
    notigate = _installed_wheel(tmp_path)
    repo = tmp_path / "policy-repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("README.md"))
    assert sorted(p.name for p in repo.iterdir() if not p.name.startswith(".")) == [
        "policies",
        "providers.yaml",
        "templates",
    ]
    where = run(notigate.parent / "python", "-c", "import gateway; print(gateway.__file__)", cwd=repo).stdout
    assert where.startswith(str(tmp_path / "venv"))  # the wheel's code, not this checkout's
    for args in (("init", "-q", "-b", "main"), ("add", "."), ("commit", "-qm", "the bundle")):
        run("git", "-c", "user.email=ci@example.com", "-c", "user.name=CI", *args, cwd=repo)
    # Part A of issue 12 adds `--format github` and `--format junit`; the CI files use them.
    assert run(notigate, "check", cwd=repo).stdout.startswith("ok: ")
    covered = run(notigate, "test", "--coverage", "--min-coverage", "100", cwd=repo).stdout
    assert "(100.0%)" in covered
    email_only(BundlePaths.for_policies(repo / "policies"))  # the pull request: one rule changed
    diff = run(notigate, "diff", "main", "--format", "markdown", "--samples", "200", cwd=repo).stdout
    assert diff.startswith("### Policy diff `main (") and "`order.shipped`" in diff
    gate = ("--samples", "200", "--fail-on", "any-change")
    refused = run(notigate, "diff", "main", *gate, cwd=repo, check=False)
    assert refused.returncode == 1 and "decisions changed" in refused.stderr
