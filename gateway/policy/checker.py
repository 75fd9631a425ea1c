"""`check()`: the one code path that decides whether a policy bundle may go live.

`notigate check` prints its diagnostics; the server's startup calls `load_policy()`, which
runs the very same function and refuses to start on any diagnostic. Nothing else loads a
bundle, so a policy the checker rejects can never serve a request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.policy.cel import runtime as cel_runtime
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths, LoadedBundle, compile_policy, load_documents
from gateway.policy.diagnostics import Diagnostic, PolicyError, display_path
from gateway.policy.schema import SchemaSet
from gateway.policy.suites import SuiteReport, failure_diagnostics, run_suites
from gateway.policy.version import policy_version
from gateway.templating.catalog import compile_catalog
from gateway.templating.check import check_catalog

# Later stages (template rendering checks) register here so `check` stays the single path.
ExtraCheck = Callable[[BundlePaths, CompiledPolicy], list[Diagnostic]]
EXTRA_CHECKS: list[ExtraCheck] = []


@dataclass
class CheckResult:
    policy: CompiledPolicy | None
    diagnostics: list[Diagnostic]
    suites: SuiteReport | None = None
    bundle: LoadedBundle = field(default_factory=LoadedBundle)
    notes: list[Diagnostic] = field(default_factory=list)  # worth knowing, not wrong (SMS segments)

    @property
    def ok(self) -> bool:
        return not self.diagnostics and self.policy is not None


def check(paths: BundlePaths, *, runtime: str = "auto", run_tests: bool = True) -> CheckResult:
    """Load, validate, compile and (by default) test a bundle; collect every problem."""
    if not paths.schemas.is_dir():
        problem = Diagnostic(
            file=display_path(paths.schemas),
            line=1,
            col=1,
            code="missing-directory",
            message="the JSON Schemas directory does not exist",
        )
        return CheckResult(None, [problem])
    schemas = SchemaSet(paths.schemas)
    bundle = load_documents(paths, schemas)
    diagnostics = list(bundle.diagnostics)
    policy: CompiledPolicy | None = None
    suites = None
    notes: list[Diagnostic] = []
    if bundle.defaults:
        version = policy_version(paths.all_files(), paths.policies)
        policy, problems = compile_policy(bundle, cel_runtime(runtime), version)
        diagnostics += problems
    elif paths.policies.is_dir() and not any(f.kind == "Defaults" for f in bundle.files):
        diagnostics.append(
            Diagnostic(
                file=display_path(paths.policies),
                line=1,
                col=1,
                code="missing-defaults",
                message="no file of kind Defaults in the policies directory; every bundle needs "
                "exactly one (channels, tiers, priorities)",
            )
        )
    if policy is not None:
        # Templates are compiled here, once per policy version, and travel with the policy.
        catalog, problems = compile_catalog(paths.templates, schemas)
        diagnostics += problems
        problems, notes = check_catalog(catalog)
        diagnostics += problems
        policy.messages = catalog
        for extra in EXTRA_CHECKS:
            diagnostics += extra(paths, policy)
        # Suites judge a whole bundle: on a partly loaded one they would only report
        # the missing parts again, as misleading test failures.
        if run_tests and not diagnostics:
            suites = run_suites(policy, bundle.suites)
            diagnostics += failure_diagnostics(suites)
    # One mistake inherited by many rules (a file default, a tier name) is reported once.
    diagnostics = sorted(set(diagnostics))
    return CheckResult(policy if not diagnostics else None, diagnostics, suites, bundle, sorted(notes))


def load_policy(paths: BundlePaths, *, runtime: str = "auto") -> CompiledPolicy:
    """The compiled bundle, or PolicyError listing every problem: what the server runs on."""
    result = check(paths, runtime=runtime)
    if not result.ok or result.policy is None:
        raise PolicyError(result.diagnostics)
    return result.policy
