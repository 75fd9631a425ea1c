"""`notigate check`'s template stage: render every template with its example data.

Run by the same `check()` as the server's startup, so a template that cannot render its own
example (an undefined variable, a syntax error), an SMS longer than a carrier accepts or a
push payload over the platform limit never goes live. It also notes what each SMS costs in
segments, since that is what carriers bill.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.policy.diagnostics import Diagnostic, DiagnosticCode
from gateway.templating.catalog import CompiledTemplate, RenderError, TemplateCatalog, context
from gateway.templating.limits import MAX_PUSH_PAYLOAD, MAX_SMS_SEGMENTS, push_payload_bytes, sms_length


def check_catalog(catalog: TemplateCatalog) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(problems, notes) for every template rendered with its directory's example."""
    problems: list[Diagnostic] = []
    notes: list[Diagnostic] = []
    for (name, channel), variants in sorted(catalog.templates.items()):
        if None not in variants and (name, channel, None) not in catalog.broken:
            # Locales fall back to the default; without one, every other locale gets nothing.
            first = min(variants.values(), key=lambda t: t.file)
            problems.append(
                _at(
                    first,
                    1,
                    "template-default",
                    f"templates/{name}/ has {channel} only for "
                    f"{', '.join(sorted(str(v) for v in variants))}: add {channel}.yaml, the default "
                    "every other locale falls back to",
                )
            )
    for template in catalog.all():
        example = catalog.examples.get(template.name)
        if example is None and (template.name, "example", None) in catalog.broken:
            continue  # its example.yaml has its own diagnostics
        if example is None:
            problems.append(
                _at(
                    template,
                    1,
                    "template-example",
                    f"no example.yaml in templates/{template.name}/: add one "
                    "with the `data` an intent carries, so check can render this template",
                )
            )
            continue
        runs: list[tuple[str, Mapping[str, Any]]] = [
            ("", context(template.name, example.data, locale=template.locale, user_id="u_example"))
        ]
        if example.batch:
            runs.append(
                (
                    f" (batch of {len(example.batch)})",
                    context(
                        template.name,
                        example.data,
                        locale=template.locale,
                        user_id="u_example",
                        batch=example.batch,
                    ),
                )
            )
        for label, ctx in runs:
            try:
                fields = template.render(ctx)
            except RenderError as exc:
                problems.append(
                    Diagnostic(
                        file=exc.file,
                        line=exc.line,
                        col=1,
                        code="template-render",
                        message=f"{exc.field}: {exc.reason}, rendering the example of {example.file}{label}",
                    )
                )
                continue
            problems += _limits(template, fields, label, notes)
    return problems, notes


def _limits(
    template: CompiledTemplate, fields: Mapping[str, Any], label: str, notes: list[Diagnostic]
) -> list[Diagnostic]:
    line = template.fields[0].line if template.fields else 1
    if template.channel == "sms":
        length = sms_length(fields.get("body", ""))
        if length.segments > MAX_SMS_SEGMENTS:
            return [
                _at(
                    template,
                    line,
                    "sms-too-long",
                    f"the example renders to {length.describe()}; carriers accept at most "
                    f"{MAX_SMS_SEGMENTS} segments{label}",
                )
            ]
        notes.append(_at(template, line, "sms-segments", f"{length.describe()} with the example data{label}"))
    elif template.channel == "push":
        size = push_payload_bytes(dict(fields))
        if size > MAX_PUSH_PAYLOAD:
            return [
                _at(
                    template,
                    line,
                    "push-too-large",
                    f"the example's payload is {size} bytes; FCM and APNs refuse more than "
                    f"{MAX_PUSH_PAYLOAD}{label}",
                )
            ]
    return []


def _at(template: CompiledTemplate, line: int, code: DiagnosticCode, message: str) -> Diagnostic:
    return Diagnostic(file=template.file, line=line, col=1, code=code, message=message)
