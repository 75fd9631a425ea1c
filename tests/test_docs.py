"""The examples of docs/policies.md are run: what the reference says is what the gateway does.

A fenced block whose info string carries `example=NAME file=PATH` is a file of that
example's bundle; a `console` block of the same example shows `$ notigate check` and the
exact lines it must print. Each example is dropped into a copy of the shipped bundle.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.policy.checker import check
from gateway.policy.compiler import BundlePaths
from tests.conftest import REPO, RUNTIMES

DOC = REPO / "docs" / "policies.md"
FENCE = re.compile(r"^```(?P<lang>\w+)(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass
class Example:
    name: str
    files: dict[str, str] = field(default_factory=dict)
    console: list[str] = field(default_factory=list)


def examples() -> list[Example]:
    found: dict[str, Example] = {}
    for match in FENCE.finditer(DOC.read_text(encoding="utf-8")):
        attributes = dict(re.findall(r"(\w+)=(\S+)", match.group("info")))
        if "example" not in attributes:
            continue
        example = found.setdefault(attributes["example"], Example(attributes["example"]))
        if match.group("lang") == "console":
            example.console = match.group("body").strip().splitlines()
        else:
            example.files[attributes["file"]] = match.group("body")
    return list(found.values())


EXAMPLES = examples()


def test_the_reference_has_runnable_examples() -> None:
    assert {e.name for e in EXAMPLES} >= {"alerts", "ambiguous", "weekday-promos", "cel-helpers", "cel-error"}


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy2(REPO / "providers.yaml", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NOTIGATE_SCHEMAS", str(REPO / "schemas"))
    return tmp_path


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_example(example: Example, runtime: str, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, text in example.files.items():
        (bundle / name).write_text(text, encoding="utf-8")
    if example.console:
        command, *expected = example.console
        assert command == "$ notigate check"
        status = main(["check", "--runtime", runtime])
        printed = capsys.readouterr().out.strip().splitlines()
        assert printed == expected
        assert status == 1
        return
    result = check(BundlePaths.for_policies(Path("policies"), schemas=REPO / "schemas"), runtime=runtime)
    assert [d.format() for d in result.diagnostics] == []
    assert result.suites is not None
    ran = {r.case.origin.file for r in result.suites.results}
    suites = {name for name in example.files if name.startswith("policies/tests/")}
    assert suites <= ran, "the example's own test suite did not run"
