"""Templates compile once, resolve through the locale chain and render in a strict sandbox."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.policy.schema import SchemaSet
from gateway.templating.catalog import (
    _TEXT,
    RenderError,
    TemplateCatalog,
    compile_catalog,
    context,
    locale_chain,
)

REPO = Path(__file__).resolve().parents[2]
HEAD = "# yaml-language-server: $schema=../../schemas/template.schema.json\napiVersion: notigate/v1\n"


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return SchemaSet(REPO / "schemas")


@pytest.fixture(scope="module")
def shipped(schemas: SchemaSet) -> TemplateCatalog:
    catalog, problems = compile_catalog(REPO / "templates", schemas)
    assert problems == []
    return catalog


def write(root: Path, relative: str, body: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + body)


def ctx(data: Mapping[str, object], **kw: object) -> dict[str, object]:
    return context("order.shipped", dict(data), locale=None, user_id="u_1", **kw)  # type: ignore[arg-type]


def test_locale_chain() -> None:
    assert locale_chain("fr-CA") == ("fr-ca", "fr", None)
    assert locale_chain("fr_CA") == ("fr-ca", "fr", None)
    assert locale_chain("zh-Hant-TW") == ("zh-hant-tw", "zh-hant", "zh", None)
    assert locale_chain(None) == (None,)


def test_locale_falls_back_from_region_to_language_to_default(shipped: TemplateCatalog) -> None:
    french = shipped.resolve("order.shipped", "email", "fr-CA")
    assert french is not None and french.locale == "fr" and french.file.endswith("email.fr.yaml")
    default = shipped.resolve("order.shipped", "email", "de-DE")
    assert default is not None and default.locale is None and default.file.endswith("email.yaml")
    # sms has no French variant: French users get the default
    sms = shipped.resolve("order.shipped", "sms", "fr")
    assert sms is not None and sms.locale is None
    assert shipped.resolve("order.shipped", "fax", "fr") is None


def test_region_specific_wins(tmp_path: Path, schemas: SchemaSet) -> None:
    write(tmp_path, "e.x/sms.yaml", "kind: Template\nbody: 'default'\n")
    write(tmp_path, "e.x/sms.fr.yaml", "kind: Template\nbody: 'fr'\n")
    write(tmp_path, "e.x/sms.fr-CA.yaml", "kind: Template\nbody: 'fr-CA'\n")
    catalog, problems = compile_catalog(tmp_path, schemas)
    assert problems == []
    rendered = {}
    for locale in ("fr-CA", "fr-FR", "en"):
        template = catalog.resolve("e.x", "sms", locale)
        assert template is not None
        rendered[locale] = template.render(ctx({}))["body"]
    assert rendered == {"fr-CA": "fr-CA", "fr-FR": "fr", "en": "default"}


def test_renders_every_field_of_a_channel(shipped: TemplateCatalog) -> None:
    data = {"order_id": "A-1", "carrier": "UPS", "eta": "Monday", "tracking_url": "https://t.example/A-1"}
    push = shipped.resolve("order.shipped", "push", None)
    assert push is not None
    assert push.render(ctx(data)) == {
        "title": "Your order is on its way",
        "body": "Order A-1 shipped with UPS.",
        "data": {"order_id": "A-1", "url": "https://t.example/A-1"},
    }


def test_html_is_autoescaped_and_text_is_not(shipped: TemplateCatalog) -> None:
    data = {
        "order_id": "<b>A&1</b>",
        "carrier": "UPS",
        "eta": "x",
        "tracking_url": "https://t.example/?a=1&b=2",
    }
    email = shipped.resolve("order.shipped", "email", None)
    assert email is not None
    fields = email.render(ctx(data))
    assert "&lt;b&gt;A&amp;1&lt;/b&gt;" in fields["html"] and "<b>A&1</b>" not in fields["html"]
    assert 'href="https://t.example/?a=1&amp;b=2"' in fields["html"]
    assert "<b>A&1</b>" in fields["subject"] and "<b>A&1</b>" in fields["text"]


def test_an_undefined_variable_is_an_error_naming_file_line_and_field(shipped: TemplateCatalog) -> None:
    email = shipped.resolve("order.shipped", "email", None)
    assert email is not None
    with pytest.raises(RenderError) as caught:
        email.render(ctx({"order_id": "A-1", "tracking_url": "u"}))  # no carrier
    error = caught.value
    assert error.file.endswith("templates/order.shipped/email.yaml")
    assert error.field == "text" and error.line == 5
    assert "carrier" in error.reason


def test_optional_parts_leave_no_gaps(shipped: TemplateCatalog) -> None:
    email = shipped.resolve("order.shipped", "email", None)
    in_app = shipped.resolve("order.shipped", "in_app", None)
    assert email is not None and in_app is not None
    fields = email.render(ctx({"order_id": "A-1", "carrier": "UPS"}))
    assert fields["text"] == "Good news: order A-1 is on its way with UPS."
    # an optional field that renders empty is left out rather than sent blank
    assert "action_url" not in in_app.render(ctx({"order_id": "A-1", "carrier": "UPS"}))


@pytest.mark.parametrize(
    "source",
    [
        "{{ data.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ data.update({'x': 1}) }}",  # the immutable sandbox refuses mutation
        "{{ data.pop('a') }}",
    ],
)
def test_the_sandbox_refuses_escapes(tmp_path: Path, schemas: SchemaSet, source: str) -> None:
    write(tmp_path, "e.x/sms.yaml", f'kind: Template\nbody: "{source}"\n')
    catalog, problems = compile_catalog(tmp_path, schemas)
    assert problems == []
    template = catalog.resolve("e.x", "sms", None)
    assert template is not None
    with pytest.raises(RenderError):
        template.render(ctx({"a": 1}))


def test_batch_is_available_to_grouped_messages(shipped: TemplateCatalog) -> None:
    push = shipped.resolve("social.like", "push", None)
    assert push is not None
    one = {"actor_name": "Grace", "post_title": "Run", "post_url": "u"}
    assert push.render(ctx(one))["title"] == "Grace liked your post"
    seven = push.render(ctx(one, batch=[{"actor_name": f"a{i}"} for i in range(7)]))
    assert seven["title"] == "7 people liked your post"


@pytest.mark.parametrize(
    ("relative", "body", "expected"),
    [
        ("e.x/sms.yaml", "kind: Template\nbody: '{{ data.x '\n", [(4, "template-syntax", "body:")]),
        (
            "e.x/sms.yaml",
            "kind: Template\ntitle: 'x'\n",
            [(2, "template", "needs body"), (4, "template", "no field 'title'")],
        ),
        ("e.x/email.yaml", "kind: Template\nsubject: 'x'\n", [(2, "template", "needs text")]),
        ("e.x/fax.yaml", "kind: Template\nbody: 'x'\n", [(2, "template", "unknown channel 'fax'")]),
        ("e.x/sms.yaml", "kind: Template\nbody: 3\n", [(4, "schema", "body")]),
    ],
)
def test_bad_templates_are_located(
    tmp_path: Path, schemas: SchemaSet, relative: str, body: str, expected: list[tuple[int, str, str]]
) -> None:
    """Line 2 is the document itself (a problem of the whole file), 4 the offending field."""
    write(tmp_path, relative, body)
    _, problems = compile_catalog(tmp_path, schemas)
    assert [(p.line, p.code) for p in sorted(problems)] == [(line, code) for line, code, _ in expected]
    for problem, (_, _, fragment) in zip(sorted(problems), expected, strict=True):
        assert problem.file.endswith(relative) and fragment in problem.message, problem


@pytest.mark.parametrize(
    "source",
    [
        "{{ data.order_id }}",
        "{{ data.nested.inner }}",
        "{{ data.missing is defined }}",
        "{{ data.nested.missing is defined }}",
        "{{ data.keys() | list }}",  # a dict's own attribute, not an item of that name
        "{{ data.get('order_id') }}",
        "{{ data['order_id'] }}",
        "{{ batch.count }} {{ batch.items | length }}",
        "{{ data.__class__ }}",
        "{{ data.missing }}",
        "{{ data.update({'x': 1}) }}",
    ],
)
def test_attribute_lookups_answer_as_jinjas_own_sandbox(source: str) -> None:
    """The sandbox reads a dict's item without Jinja's attribute-first detour: the same
    answer, or the same error, as the stock immutable sandbox for every kind of lookup."""
    stock = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    values = ctx({"order_id": "A-1", "nested": {"inner": 2}, "keys": "an item named keys"})

    def outcome(environment: jinja2.Environment) -> str:
        try:
            return environment.from_string(source).render(values)
        except jinja2.TemplateError as exc:
            return f"{type(exc).__name__}: {exc}"

    assert outcome(_TEXT) == outcome(stock)
