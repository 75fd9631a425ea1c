"""`notigate check` renders every template with its example and refuses what cannot go live."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.policy.checker import check
from gateway.policy.compiler import BundlePaths

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    shutil.copy2(REPO / "providers.yaml", tmp_path / "providers.yaml")
    return tmp_path


def run(root: Path) -> list[tuple[str, int, str, str]]:
    result = check(BundlePaths.for_policies(root / "policies", schemas=REPO / "schemas"), run_tests=False)
    return [(Path(d.file).name, d.line, d.code, d.message) for d in result.diagnostics]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_the_shipped_templates_render_their_examples() -> None:
    result = check(BundlePaths.for_policies(REPO / "policies", schemas=REPO / "schemas"), run_tests=False)
    assert result.diagnostics == []
    assert result.policy is not None
    # compiled once, with the policy: every (event, channel) the engine may pick can be rendered
    for name, channel in result.policy.templates:
        assert result.policy.messages.resolve(name, channel, None) is not None, (name, channel)
    sms = [n for n in result.notes if n.code == "sms-segments"]
    assert len(sms) == sum(1 for _, c in result.policy.templates if c == "sms")
    assert all("1 segment (GSM-7" in n.message for n in sms)


def test_an_undefined_variable_is_reported_at_its_template(bundle: Path) -> None:
    edit(bundle / "templates/order.shipped/sms.yaml", "{{ data.carrier }}", "{{ data.courier }}")
    [(file, line, code, message)] = run(bundle)
    assert (file, line, code) == ("sms.yaml", 4, "template-render")
    assert "body: undefined variable" in message and "courier" in message and "example.yaml" in message


def test_an_sms_over_ten_segments_is_refused(bundle: Path) -> None:
    edit(bundle / "templates/order.shipped/sms.yaml", 'body: "', 'body: "' + "Ünïcödé " * 90)
    [(file, _, code, message)] = run(bundle)
    assert (file, code) == ("sms.yaml", "sms-too-long")
    assert "UCS-2" in message and "segments" in message


def test_a_push_payload_over_4096_bytes_is_refused(bundle: Path) -> None:
    edit(bundle / "templates/order.shipped/push.yaml", 'body: "', 'body: "' + "x" * 4100)
    [(file, _, code, message)] = run(bundle)
    assert (file, code) == ("push.yaml", "push-too-large") and "4096" in message


def test_a_batched_example_is_rendered_too(bundle: Path) -> None:
    push = bundle / "templates/social.like/push.yaml"
    edit(push, "{{ batch.count }} people", "{{ batch.items[0].nope }} people")
    problems = run(bundle)
    assert [(f, c) for f, _, c, _ in problems] == [("push.yaml", "template-render")]
    assert "(batch of 3)" in problems[0][3]


def test_a_template_without_an_example_is_refused(bundle: Path) -> None:
    (bundle / "templates/order.shipped/example.yaml").unlink()
    problems = run(bundle)
    assert problems and {c for _, _, c, _ in problems} == {"template-example"}
    assert len(problems) == len(list((bundle / "templates/order.shipped").glob("*.yaml")))


def test_the_cli_prints_segment_notes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(REPO / "policies"), "--no-tests", "-v"]) == 0
    out = capsys.readouterr().out
    assert "templates/order.shipped/sms.yaml:4:1: note: sms-segments: 1 segment (GSM-7," in out
    assert "templates rendered" in out.splitlines()[-1]


def test_the_cli_always_notes_costly_sms(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit(bundle / "templates/order.shipped/sms.yaml", 'body: "', 'body: "€' + "x" * 170)
    assert main(["check", str(bundle / "policies"), "--no-tests"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "note:" in line] == [
        f"{bundle}/templates/order.shipped/sms.yaml:4:1: note: sms-segments: 2 segments "
        "(GSM-7, 245 septets) with the example data"
    ]


def test_a_channel_with_only_locale_variants_is_refused(bundle: Path) -> None:
    """Without email.yaml, every user whose locale is not French would get no email."""
    folder = bundle / "templates/order.shipped"
    (folder / "email.yaml").unlink()
    problems = run(bundle)
    assert [(f, c) for f, _, c, _ in problems] == [("email.fr.yaml", "template-default")]
    assert "add email.yaml" in problems[0][3]
