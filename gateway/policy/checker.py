"""`check()`: the one code path that decides whether a policy bundle may go live.

`notigate check` prints its diagnostics; the server's startup calls `load_policy()`, which
runs the very same function and refuses to start on any diagnostic. Nothing else loads a
bundle, so a policy the checker rejects can never serve a request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gateway.policy.cel import runtime as cel_runtime
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths, LoadedBundle, compile_policy, load_documents
from gateway.policy.dependencies import blocked_cases
from gateway.policy.diagnostics import TEST_FAILURE_CODES, Diagnostic, PolicyError
from gateway.policy.schema import SchemaSet
from gateway.policy.suites import (
    SuiteReport,
    coverage_items,
    coverage_percent,
    failure_diagnostics,
    run_suites,
)
from gateway.policy.version import policy_version
from gateway.templating.catalog import compile_catalog
from gateway.templating.check import check_catalog

# Later stages (template rendering checks) register here so `check` stays the single path.
ExtraCheck = Callable[[BundlePaths, CompiledPolicy], list[Diagnostic]]
EXTRA_CHECKS: list[ExtraCheck] = []


CheckStatus = Literal["ok", "invalid", "tests-failed"]


@dataclass
class CheckResult:
    policy: CompiledPolicy | None
    diagnostics: list[Diagnostic]
    suites: SuiteReport | None = None
    bundle: LoadedBundle = field(default_factory=LoadedBundle)
    notes: list[Diagnostic] = field(default_factory=list)  # worth knowing, not wrong (SMS segments)
    coverage: float | None = None  # percent of rules and branches the suites exercised

    @property
    def ok(self) -> bool:
        return not self.diagnostics and self.policy is not None

    @property
    def status(self) -> CheckStatus:
        """`invalid` when anything but the tests is wrong: CI tells the two apart by exit code."""
        if self.ok:
            return "ok"
        if self.policy is None and not self.diagnostics:
            return "invalid"
        return "tests-failed" if all(d.code in TEST_FAILURE_CODES for d in self.diagnostics) else "invalid"


def check(
    paths: BundlePaths,
    *,
    runtime: str = "auto",
    run_tests: bool = True,
    min_coverage: float | None = None,
) -> CheckResult:
    """Load, validate, compile and (by default) test a bundle; collect every problem.

    No stage waits for another to succeed: every file is parsed and schema-checked, what
    loaded is compiled, every template is rendered, and the test cases run against what
    compiled, except those a broken file could change (`dependencies.blocked_cases`).
    """
    if not paths.schemas.is_dir():
        problem = Diagnostic.of_whole(
            paths.schemas, "missing-directory", "the JSON Schemas directory does not exist"
        )
        return CheckResult(None, [problem])
    schemas = SchemaSet(paths.schemas)
    bundle = load_documents(paths, schemas)
    version = policy_version(paths.all_files(), paths.policies)
    policy, problems = compile_policy(bundle, cel_runtime(runtime), version)
    diagnostics = [*bundle.diagnostics, *problems, *_missing_defaults(paths, bundle)]
    broken = {d.file for d in diagnostics}
    # Templates are compiled here, once per policy version, and travel with the policy.
    catalog, problems = compile_catalog(paths.templates, schemas)
    diagnostics += problems
    problems, notes = check_catalog(catalog)
    diagnostics += problems
    suites, coverage = None, None
    if policy is not None:
        policy.messages = catalog
        for extra in EXTRA_CHECKS:
            diagnostics += extra(paths, policy)
        if run_tests:
            suites = run_suites(policy, bundle.suites, blocked_cases(paths, bundle, broken))
            diagnostics += failure_diagnostics(suites)
            coverage = coverage_percent(coverage_items(policy), suites.covered)
            diagnostics += _coverage_gate(paths, coverage, min_coverage)
    # One mistake inherited by many rules (a file default, a tier name) is reported once.
    diagnostics = sorted(set(diagnostics))
    return CheckResult(
        policy if not diagnostics else None, diagnostics, suites, bundle, sorted(notes), coverage
    )


def _missing_defaults(paths: BundlePaths, bundle: LoadedBundle) -> list[Diagnostic]:
    if not paths.policies.is_dir() or any(f.kind == "Defaults" for f in bundle.files):
        return []
    return [
        Diagnostic.of_whole(
            paths.policies,
            "missing-defaults",
            "no file of kind Defaults in the policies directory; every bundle needs "
            "exactly one (channels, tiers, priorities)",
        )
    ]


def _coverage_gate(paths: BundlePaths, coverage: float, minimum: float | None) -> list[Diagnostic]:
    if minimum is None or coverage >= minimum:
        return []
    return [
        Diagnostic.of_whole(
            paths.policies,
            "coverage-below",
            f"the test suites exercise {coverage:.1f}% of rules and branches, below the "
            f"required {minimum:g}%; `notigate test --coverage` lists what is never exercised",
        )
    ]


def load_policy(paths: BundlePaths, *, runtime: str = "auto") -> CompiledPolicy:
    """The compiled bundle, or PolicyError listing every problem: what the server runs on."""
    result = check(paths, runtime=runtime)
    if not result.ok or result.policy is None:
        raise PolicyError(result.diagnostics)
    return result.policy
