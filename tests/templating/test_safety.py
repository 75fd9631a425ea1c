"""What rendered output may carry (`gateway/templating/safety.py`): one line in a mail
header, links only to http(s) (and mailto in email HTML), however the URL is disguised."""

from __future__ import annotations

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.templating.catalog import CompiledField, CompiledTemplate, RenderError
from gateway.templating.safety import html_links, output_problem, url_scheme

UNSAFE = [
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "\x01javascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
]
SAFE = ["https://example.com/a?b=c", "http://example.com", "/orders/1", "orders/1", "#top", "//cdn.example"]


@pytest.mark.parametrize("url", UNSAFE)
def test_unsafe_links_are_refused_in_action_urls_push_data_and_email_html(url: str) -> None:
    assert output_problem("in_app", ("action_url",), url) is not None
    assert output_problem("webhook", ("action_url",), url) is not None
    assert output_problem("push", ("data", "url"), url) is not None
    assert output_problem("email", ("html",), f'<p><a href="{url}">track</a></p>') is not None


@pytest.mark.parametrize("url", SAFE)
def test_web_and_relative_links_pass(url: str) -> None:
    assert output_problem("in_app", ("action_url",), url) is None
    assert output_problem("email", ("html",), f'<a href="{url}">x</a><img src="{url}">') is None


def test_mailto_is_a_link_in_email_html_only() -> None:
    assert output_problem("email", ("html",), '<a href="mailto:help@example.com">help</a>') is None
    assert output_problem("in_app", ("action_url",), "mailto:help@example.com") is not None


def test_html_entities_and_every_url_attribute_are_read_as_a_client_would() -> None:
    hidden = [
        '<a href="javascript&colon;alert(1)">x</a>',
        '<a href="&#106;avascript:alert(1)">x</a>',
        "<a href='jav&#x09;ascript:alert(1)'>x</a>",
        '<img src="data:image/svg+xml,<svg onload=alert(1)>">',
        '<form action="javascript:alert(1)"><button formaction="vbscript:x">go</button></form>',
        '<A HREF="javascript:alert(1)">x</A>',
        "<a href\n  =  javascript:alert(1)>x</a>",
        "<a/href='javascript:alert(1)'>x</a>",
        '<svg><a xlink:href="javascript:alert(1)">x</a></svg>',
        '<table background="javascript:alert(1)">',
    ]
    for html in hidden:
        assert output_problem("email", ("html",), html) is not None, html
    assert html_links('<a href="https://a.example" title="javascript:no">x</a>') == ["https://a.example"]
    assert html_links('<a data-href="javascript:x" hreflang="en" href=/a>') == ["/a"]


def test_text_that_merely_mentions_a_scheme_is_not_a_link() -> None:
    assert output_problem("email", ("html",), "<p>type javascript:void(0) in the box</p>") is None
    assert output_problem("email", ("text",), "javascript:alert(1)") is None
    assert output_problem("in_app", ("body",), "javascript:alert(1)") is None


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_a_line_break_in_an_email_subject_is_refused_and_elsewhere_allowed(brk: str) -> None:
    value = f"Your order A-1{brk}Bcc: everyone@example.com"
    assert value.splitlines() != [value]  # what Python's email package refuses in a header
    problem = output_problem("email", ("subject",), value)
    assert problem is not None and "mail header" in problem
    assert output_problem("email", ("text",), value) is None
    assert output_problem("push", ("title",), value) is None


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40))
def test_a_subject_passes_exactly_when_it_is_one_line(subject: str) -> None:
    passes = output_problem("email", ("subject",), subject) is None
    assert passes == (len(subject.splitlines()) <= 1)


@given(st.sampled_from(["javascript", "data", "vbscript", "jar"]), st.text(max_size=10))
def test_scheme_reading_ignores_case_and_whitespace_inside_it(scheme: str, rest: str) -> None:
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(scheme))
    spaced = f" {mixed[:2]}\t{mixed[2:]}:{rest}"
    assert url_scheme(spaced) == scheme


def test_a_template_whose_output_is_unsafe_fails_to_render_naming_the_field() -> None:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    template = CompiledTemplate(
        "order.shipped",
        "in_app",
        None,
        "templates/order.shipped/in_app.yaml",
        (CompiledField(("action_url",), 6, env.from_string("{{ data.url }}")),),
    )
    assert template.render({"data": {"url": "https://t.example/1"}}) == {"action_url": "https://t.example/1"}
    with pytest.raises(RenderError) as failed:
        template.render({"data": {"url": "javascript:alert(document.cookie)"}})
    assert (failed.value.file, failed.value.line, failed.value.field) == (
        "templates/order.shipped/in_app.yaml",
        6,
        "action_url",
    )
    assert "javascript: URL" in failed.value.reason and "cookie" not in str(failed.value)
