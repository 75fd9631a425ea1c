"""`check` and `test` results in the shapes CI systems read.

`github`: workflow commands (`::error file=…,line=…,col=…::message`) that GitHub Actions
turns into annotations on the pull request's lines. `junit`: JUnit XML, which GitHub,
GitLab and most CI servers render as a test report: one test case per policy test case
(failed, passed or skipped, with why), plus one failing case per problem of the bundle
itself, so an invalid bundle is never an empty, green report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Literal

from gateway.policy.diagnostics import TEST_FAILURE_CODES, Diagnostic
from gateway.policy.suites import SuiteReport

ReportFormat = Literal["text", "json", "github", "junit"]
REPORT_FORMATS: tuple[ReportFormat, ...] = ("text", "json", "github", "junit")


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(diagnostics: Iterable[Diagnostic], notes: Iterable[Diagnostic] = ()) -> list[str]:
    """One workflow command per problem (`error`) and note (`notice`)."""
    lines = []
    for level, items in (("error", diagnostics), ("notice", notes)):
        for d in items:
            where = (
                f"file={_escape_property(d.file)},line={d.line},col={d.col},title={_escape_property(d.code)}"
            )
            lines.append(f"::{level} {where}::{_escape_data(d.message)}")
    return lines


def junit_xml(diagnostics: Iterable[Diagnostic], suites: SuiteReport | None) -> str:
    """JUnit XML: the bundle's own problems as one suite, then each policy test suite."""
    root = ET.Element("testsuites", name="notigate")
    bundle = [d for d in diagnostics if d.code not in TEST_FAILURE_CODES]
    gate = [d for d in diagnostics if d.code == "coverage-below"]
    checks = ET.SubElement(root, "testsuite", name="bundle", tests=str(max(1, len(bundle) + len(gate))))
    checks.set("failures", str(len(bundle) + len(gate)))
    for d in [*bundle, *gate]:
        case = ET.SubElement(
            checks, "testcase", classname="bundle", name=f"{d.file}:{d.line}:{d.col} {d.code}", file=d.file
        )
        case.set("line", str(d.line))
        ET.SubElement(case, "failure", message=d.message, type=d.code).text = d.format()
    if not bundle and not gate:
        ET.SubElement(checks, "testcase", classname="bundle", name="the bundle loads and compiles")
    for name, cases in _by_suite(suites).items():
        _suite(root, name, cases)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


_Row = tuple[str, str, int, list[str] | None, str | None]  # case, file, line, problems, skipped


def _by_suite(suites: SuiteReport | None) -> dict[str, list[_Row]]:
    grouped: dict[str, list[_Row]] = {}
    if suites is None:
        return grouped
    for result in suites.results:
        c = result.case
        grouped.setdefault(c.suite, []).append((c.name, c.origin.file, c.origin.line, result.problems, None))
    for c, why in suites.skipped:
        grouped.setdefault(c.suite, []).append((c.name, c.origin.file, c.origin.line, None, why))
    return grouped


def _suite(root: ET.Element, name: str, rows: list[_Row]) -> None:
    failures = sum(1 for _, _, _, problems, _ in rows if problems)
    skipped = sum(1 for *_, why in rows if why is not None)
    suite = ET.SubElement(root, "testsuite", name=name, tests=str(len(rows)))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    for case_name, file, line, problems, why in rows:
        case = ET.SubElement(suite, "testcase", classname=name, name=case_name, file=file, line=str(line))
        if why is not None:
            ET.SubElement(case, "skipped", message=why)
        elif problems:
            ET.SubElement(case, "failure", message="; ".join(problems), type="test-failed").text = "\n".join(
                problems
            )
