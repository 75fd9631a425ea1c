"""Every template of a bundle, parsed and compiled once per policy version.

Templates come from pull requests, so they run in Jinja2's immutable sandbox (no attribute
access to internals, no mutation of the data they are given) with `StrictUndefined`: a
variable the intent does not carry is an error naming the template, not an empty string
in a customer's inbox. Only an email's `html` is autoescaped; text, SMS and push fields are
plain text, where escaping would show `&amp;` to the reader. What a field renders is then
checked (`gateway/templating/safety.py`): no line break in a mail header, no link to a
`javascript:`-like URL.

Locales fall back from the most specific to the default: a message for `fr-CA` uses
`email.fr-CA.yaml`, else `email.fr.yaml`, else `email.yaml`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.policy.diagnostics import Diagnostic
from gateway.policy.schema import SchemaSet
from gateway.policy.source import SourceDoc, SourceError, load_yaml
from gateway.templating.safety import output_problem

# The fields each channel's template may carry, and those it must.
CHANNEL_FIELDS: Mapping[str, tuple[str, ...]] = {
    "push": ("title", "body", "data"),
    "email": ("subject", "text", "html"),
    "sms": ("body",),
    "in_app": ("title", "body", "action_url", "icon", "data"),
    "webhook": ("title", "body", "subject", "text", "data", "action_url"),
}
REQUIRED_FIELDS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    # each inner tuple: at least one of these
    "push": (("title", "body"),),
    "email": (("subject",), ("text",)),
    "sms": (("body",),),
    "in_app": (("title", "body"),),
}


class RenderError(Exception):
    """A template could not be rendered for a message: a permanent failure of that message."""

    def __init__(self, file: str, line: int, field: str, reason: str) -> None:
        super().__init__(f"{file}:{line}: {field}: {reason}")
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason


def locale_chain(locale: str | None) -> tuple[str | None, ...]:
    """`fr_CA` -> ("fr-ca", "fr", None): the lookup order, the default last."""
    if not locale:
        return (None,)
    parts = locale.replace("_", "-").lower().split("-")
    chain: list[str | None] = ["-".join(parts[:n]) for n in range(len(parts), 0, -1)]
    return (*chain, None)


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `data.order_id` on a plain dict read straight as its item.

    Jinja's sandbox first tries the attribute (a dict has none of that name, so Python raises
    and catches an AttributeError) and only then the item: about a microsecond per lookup, a
    dozen lookups per email. A name that is not an attribute of dict takes the same path to the
    same answer here, without the exception; any other name, and any other object, still goes
    through the sandbox's own checks."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


# trim_blocks/lstrip_blocks: a `{% if %}` on its own line leaves no blank line behind.
_TEXT = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)
_HTML = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=True, trim_blocks=True, lstrip_blocks=True)


@dataclass(frozen=True, slots=True)
class CompiledField:
    path: tuple[str, ...]  # ("subject",) or ("data", "url")
    line: int
    template: jinja2.Template | str  # a str: the field has no Jinja syntax, nothing to render


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    name: str  # the event (or a rule's `template`), e.g. order.shipped
    channel: str
    locale: str | None  # None: the default
    file: str
    fields: tuple[CompiledField, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.channel}"

    def render(self, context: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.fields:
            try:
                value = f.template if isinstance(f.template, str) else f.template.render(context)
            except jinja2.UndefinedError as exc:
                raise self._error(f, f"undefined variable: {exc.message}") from exc
            except SecurityError as exc:
                raise self._error(f, f"refused by the sandbox: {exc}") from exc
            except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
                raise self._error(f, f"{type(exc).__name__}: {exc}") from exc
            if f.path[0] != "html":
                value = value.strip()
            if not value:
                continue  # a field that renders empty is left out (an optional link, say)
            if (problem := output_problem(self.channel, f.path, value)) is not None:
                raise self._error(f, problem)
            if len(f.path) == 2:
                out.setdefault(f.path[0], {})[f.path[1]] = value
            else:
                out[f.path[0]] = value
        return out

    def _error(self, f: CompiledField, reason: str) -> RenderError:
        return RenderError(self.file, f.line, ".".join(f.path), reason)


@dataclass(frozen=True, slots=True)
class Example:
    file: str
    line: int
    data: Mapping[str, Any]
    batch: tuple[Mapping[str, Any], ...] = ()


@dataclass
class TemplateCatalog:
    """(name, channel) -> locale -> compiled template, plus each name's example data."""

    templates: dict[tuple[str, str], dict[str | None, CompiledTemplate]] = field(default_factory=dict)
    examples: dict[str, Example] = field(default_factory=dict)
    # (name, channel, locale) of files that exist but did not compile: reported once, for
    # themselves, never again as "missing".
    broken: set[tuple[str, str, str | None]] = field(default_factory=set)

    def resolve(self, name: str, channel: str, locale: str | None) -> CompiledTemplate | None:
        variants = self.templates.get((name, channel))
        if not variants:
            return None
        for candidate in locale_chain(locale):
            found = variants.get(candidate)
            if found is not None:
                return found
        return None

    def render(
        self, ref: str, locale: str | None, context: Mapping[str, Any]
    ) -> tuple[CompiledTemplate, dict[str, Any]]:
        """Render `<name>/<channel>` (a decision's template) in the best variant for `locale`."""
        name, _, channel = ref.rpartition("/")
        template = self.resolve(name, channel, locale)
        if template is None:
            raise RenderError(f"templates/{name}", 1, channel, f"no {channel} template for {name!r}")
        return template, template.render(context)

    def all(self) -> list[CompiledTemplate]:
        found = [t for variants in self.templates.values() for t in variants.values()]
        return sorted(found, key=lambda t: (t.name, t.channel, t.locale or ""))


@dataclass(frozen=True, slots=True)
class Batch:
    """The grouped items of a message: an object, not a dict, so `batch.items` and
    `batch.count` read these fields rather than the dict's methods of the same names."""

    count: int
    items: tuple[Mapping[str, Any], ...]


def context(
    event: str,
    data: Mapping[str, Any],
    *,
    locale: str | None,
    user_id: str,
    timezone: str | None = None,
    notification_id: str | None = None,
    batch: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What a template sees. `batch` always exists (one item for a single message) so one
    template serves both "Grace liked your post" and "7 people liked your post"."""
    items = tuple(batch) if batch is not None else (data,)
    return {
        "event": event,
        "data": data,
        "batch": Batch(len(items), items),
        "user": {"id": user_id, "locale": locale, "timezone": timezone},
        "locale": locale,
        "notification_id": notification_id,
    }


def compile_catalog(directory: Path, schemas: SchemaSet) -> tuple[TemplateCatalog, list[Diagnostic]]:
    """Parse, validate and compile every template and example under `directory`."""
    catalog = TemplateCatalog()
    problems: list[Diagnostic] = []
    if not directory.is_dir():
        return catalog, problems
    for path in sorted(directory.glob("*/*.yaml")):
        if path.name.startswith("_"):
            continue
        name = path.parent.name
        channel, _, locale = path.stem.partition(".")
        catalog.broken.add((name, channel, locale or None))  # until it compiles
        try:
            doc = load_yaml(path)
        except SourceError as exc:
            problems.append(exc.diagnostic)
            continue
        found = schemas.validate(doc, "template.schema.json")
        if found:
            problems += found
            continue
        if path.stem == "example":
            if doc.data.get("kind") != "TemplateExample":
                problems.append(
                    doc.diagnostic(("kind",), "template", "example.yaml must be a TemplateExample")
                )
                continue
            catalog.examples[name] = Example(
                doc.name, doc.loc(("data",)).line, doc.data["data"], tuple(doc.data.get("batch", ()))
            )
            catalog.broken.discard((name, channel, None))
            continue
        if doc.data.get("kind") != "Template":
            problems.append(
                doc.diagnostic(
                    ("kind",), "template", f"{path.name} must be a Template (or name it example.yaml)"
                )
            )
            continue
        compiled, errors = _compile(doc, name, channel, locale or None)
        problems += errors
        if compiled is not None:
            catalog.templates.setdefault((name, channel), {})[compiled.locale] = compiled
            catalog.broken.discard((name, channel, locale or None))
    return catalog, problems


def _compile(
    doc: SourceDoc, name: str, channel: str, locale: str | None
) -> tuple[CompiledTemplate | None, list[Diagnostic]]:
    problems: list[Diagnostic] = []
    allowed = CHANNEL_FIELDS.get(channel)
    if allowed is None:
        known = ", ".join(sorted(CHANNEL_FIELDS))
        return None, [
            doc.diagnostic((), "template", f"unknown channel {channel!r} in the file name; use {known}")
        ]
    sources: list[tuple[tuple[str, ...], str]] = []
    for key, value in doc.data.items():
        if key in ("apiVersion", "kind", "description"):
            continue
        if key not in allowed:
            problems.append(
                doc.diagnostic(
                    (key,),
                    "template",
                    f"{channel} messages have no field {key!r}; use {', '.join(allowed)}",
                    at_key=True,
                )
            )
            continue
        if key == "data":
            sources += [((key, k), v) for k, v in value.items()]
        else:
            sources.append(((key,), value))
    for group in REQUIRED_FIELDS.get(channel, ()):
        if not any(g in doc.data for g in group):
            problems.append(
                doc.diagnostic((), "template", f"this {channel} template needs {' or '.join(group)}")
            )
    fields: list[CompiledField] = []
    for path, source in sources:
        environment = _HTML if path == ("html",) else _TEXT
        line = doc.loc(path).line
        try:
            if not any(mark in source for mark in ("{{", "{%", "{#")):
                fields.append(CompiledField(path, line, source))
                continue
            template = environment.from_string(source)
            # Jinja chains the template's globals over the environment's (a ChainMap) and walks
            # that chain twice per render; a plain dict of the same names makes a render ~2x faster.
            template.globals = dict(template.globals)
            fields.append(CompiledField(path, line, template))
        except jinja2.TemplateSyntaxError as exc:
            problems.append(
                doc.diagnostic(
                    path, "template-syntax", f"{'.'.join(path)}: {exc.message} (template line {exc.lineno})"
                )
            )
    if problems:
        return None, problems
    file = doc.name
    return CompiledTemplate(name, channel, locale.lower() if locale else None, file, tuple(fields)), []
