"""What rendered output may carry: one line in a mail header, and only web or mail links.

A template's variables come from producers' data, so what they render is checked like input,
after rendering, whatever the template did with it (filters, concatenation, entities):

- An email `subject` becomes the `Subject:` header. A line break in it would end the header
  (or, unfolded, smuggle in another), so the mail libraries refuse it and the delivery
  failed later as `unsendable`; it is now a render error, which intake answers 422
  `template_error` before accepting the intent. "Line break" is what Python's email package
  splits on (`str.splitlines`: CR, LF, and the other Unicode line boundaries).
- A link is followed by a person: `javascript:`, `data:` or `vbscript:` in an email's
  `<a href>` or an in-app `action_url` runs code or shows a forged page in the reader's
  client. Email HTML may link to `http`, `https` and `mailto` URLs; `action_url` (in-app
  and webhook messages) and a `data.url` (push, in-app) to `http` and `https`. A relative
  URL (no scheme) is allowed: it resolves against the page that shows it. Browsers ignore
  ASCII whitespace and control characters inside a scheme (`java\tscript:`) and HTML
  decodes entities in attributes (`javascript&colon;`), so the scheme is read after both,
  as a browser would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import unescape as html_unescape

HTML_SCHEMES = frozenset({"http", "https", "mailto"})
ACTION_SCHEMES = frozenset({"http", "https"})
# Attributes whose value a mail client or browser fetches or follows.
URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "background", "poster", "xlink:href"})
# The fields that become mail headers, per channel.
HEADER_FIELDS: Mapping[str, frozenset[str]] = {"email": frozenset({"subject"})}
# Fields an app opens as a link: `action_url`, and a push's or in-app item's `data.url`.
LINK_FIELDS = frozenset({"action_url", "url"})

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_IGNORED_IN_URLS = re.compile(r"[\x00-\x20\x7f]")


def url_scheme(url: str) -> str | None:
    """The scheme a browser would see, lower-cased; None for a relative URL."""
    found = _SCHEME.match(_IGNORED_IN_URLS.sub("", url))
    return found.group(1).lower() if found else None


def unsafe_url(url: str, allowed: frozenset[str]) -> bool:
    scheme = url_scheme(url)
    return scheme is not None and scheme not in allowed


# An attribute's name just before its `=` (the character before it is not part of a name),
# and its value just after, quoted or not. Found from each `=` rather than by one regex over
# the whole document, which costs ~100 ns a character on the send path.
_LONGEST_NAME = max(len(a) for a in URL_ATTRIBUTES)
_NAME_AT_END = re.compile(r"(?:^|[^\w:-])([\w:-]+)\Z")
_VALUE = re.compile(r"""\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+)""")


def html_links(html: str) -> list[str]:
    """The values of URL-valued attributes, entities decoded as a browser decodes them.

    Wherever they appear: in a tag, but also in a comment or a <script>, where a tokenizer
    would not look (a false alarm there is harmless, a missed link is not)."""
    links: list[str] = []
    at = html.find("=")
    while at != -1:
        end = at
        while end and html[end - 1].isspace():
            end -= 1
        name = _NAME_AT_END.search(html[max(0, end - _LONGEST_NAME - 1) : end])
        if name is not None and name.group(1).lower() in URL_ATTRIBUTES:
            value = _VALUE.match(html, at + 1)
            if value is not None:
                links.append(html_unescape(value.group(1).strip("\"'")))
        at = html.find("=", at + 1)
    return links


def output_problem(channel: str, path: tuple[str, ...], value: str) -> str | None:
    """Why a rendered field may not be sent as it is, or None when it may."""
    if path[0] in HEADER_FIELDS.get(channel, ()) and len(value.splitlines()) > 1:
        return "a line break in a mail header (check the data this field renders)"
    if path == ("html",):
        for url in html_links(value):
            if unsafe_url(url, HTML_SCHEMES):
                return f"a link to a {url_scheme(url)}: URL; links may use {', '.join(sorted(HTML_SCHEMES))}"
    elif path[-1] in LINK_FIELDS and unsafe_url(value, ACTION_SCHEMES):
        return f"a {url_scheme(value)}: URL; links may use {', '.join(sorted(ACTION_SCHEMES))}"
    return None
