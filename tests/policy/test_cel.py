"""The CEL seam: both runtimes agree on values, on what is an error, and on what does not compile."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.policy.cel import CelCompileError, CelEvalError, CelInput, runtime, static_check
from tests.conftest import RUNTIMES

NOW = dt.datetime(2026, 11, 21, 18, 0, tzinfo=dt.UTC)  # Saturday
VARIABLES = CelInput(
    intent={
        "event": "order.shipped",
        "user_id": "u_1",
        "priority": "normal",
        "send_at": NOW,
        "data": {"amount": 120, "tags": ["vip", "eu"], "digital": True, "note": "x"},
    },
    user={
        "user_id": "u_1",
        "timezone": "Asia/Kolkata",
        "contacts": {"email": "a@example.com", "devices": []},
    },
    now=NOW,
    history=[
        {"event": "marketing.promo", "channel": "email", "at": NOW - dt.timedelta(hours=2), "batched": False},
        {
            "event": "marketing.promo",
            "channel": "email",
            "at": NOW - dt.timedelta(hours=30),
            "batched": False,
        },
        {"event": "social.like", "channel": "push", "at": NOW - dt.timedelta(minutes=3), "batched": True},
    ],
)

VALUES = [
    ('intent.data.amount >= 100 && intent.priority == "normal"', True),
    ("has(intent.data.missing) && intent.data.missing > 1", False),
    ("!has(intent.data.missing) || intent.data.missing > 1", True),
    ('"vip" in intent.data.tags', True),
    ('intent.data.tags.exists(t, t == "eu")', True),
    ("size(user.contacts.devices) == 0", True),
    ("intent.send_at == now", True),
    ("now.getHours(user.timezone)", 23),
    ("local_time(now, user.timezone)", "23:30"),
    ("local_weekday(now, user.timezone)", 6),
    ('in_window(now, user.timezone, "22:00", "08:00")', True),
    ('event_matches(intent.event, "order.*")', True),
    ('count_sent(history, "marketing.*", "email", now - duration("24h"))', 1),
    ('count_sent(history, "*", "*", now - duration("168h"))', 2),
    ('history.exists(h, h.at > now - duration("1h"))', True),
    ("intent.data.amount * 2", 240),
    ("intent.data", {"amount": 120, "tags": ["vip", "eu"], "digital": True, "note": "x"}),
]
ERRORS = [
    "intent.data.missing > 1",
    "intent.data.note > 1",
    "1 / 0 == 1",
    'local_time(now, "Mars/Olympus") == "x"',
    'in_window(now, user.timezone, "9am", "5pm")',
]
NOT_COMPILING = [
    ("intent.data.amount >", "Syntax error"),
    ("unknown_var == 1", "undeclared reference to 'unknown_var'"),
    ("shout(intent.event)", "undeclared reference to 'shout'"),
    ('history.exists(h, h.at > now) && h.channel == "sms"', "undeclared reference to 'h'"),
    ('now - duration("7d") < now', "not a CEL duration"),
    # A helper called wrongly used to read "undeclared reference" (cel-expr-python's words).
    ('local_time(now) == "10:00"', r"local_time takes 2 arguments \(timestamp, string\), got 1"),
    # Literals a helper cannot use fail every evaluation: refused at compile time instead.
    ('in_window(now, "UTC", "25:00", "08:00")', r"in_window, argument 3: '25:00' is not a clock time"),
    ('local_time(now, "Mars/Olympus") == "x"', r"argument 2: 'Mars/Olympus' is not an IANA time zone"),
    ('count_sent(history, "order.", "*", now) > 0', r"argument 2: 'order\.' is not an event pattern"),
    ('event_matches(intent.event, "Order.*")', r"'Order\.\*' is not an event pattern"),
    # `user` is a dyn map: a misspelt field fails only at evaluation, for every intent.
    ('user.timezon == "UTC"', r"user has no field 'timezon'; the user schema gives it contacts, locale"),
    ("has(user.contacts.emial)", r"user.contacts has no field 'emial'"),
]
# Still accepted: literals that are valid, and values only known at evaluation.
LINT_CLEAN = [
    'in_window(now, user.timezone, "22:00", "08:00")',
    'local_time(now, "Europe/Paris") == "10:00" && event_matches(intent.event, "order.*")',
    'count_sent(history, "*", "sms", now) < 3 && has(user.contacts.email) && user.locale == "fr"',
    'intent.data.user.timezon == "x"',
]


@pytest.mark.parametrize(("source", "expected"), VALUES)
@pytest.mark.parametrize("name", RUNTIMES)
def test_runtimes_agree_on_values(name: str, source: str, expected: object) -> None:
    cel = runtime(name)
    assert cel.compile(source).evaluate(cel.activation(VARIABLES)) == expected


@pytest.mark.parametrize("source", ERRORS)
@pytest.mark.parametrize("name", RUNTIMES)
def test_runtimes_agree_on_what_is_an_error(name: str, source: str) -> None:
    cel = runtime(name)
    with pytest.raises(CelEvalError) as raised:
        cel.compile(source).evaluate(cel.activation(VARIABLES))
    assert str(raised.value)


@pytest.mark.parametrize(("source", "problem"), NOT_COMPILING)
def test_static_check_rejects_with_a_runtime_independent_message(source: str, problem: str) -> None:
    with pytest.raises(CelCompileError, match=problem):
        static_check(source)


@pytest.mark.parametrize("source", LINT_CLEAN)
def test_static_check_accepts_valid_literals_and_fields(source: str) -> None:
    static_check(source)


@pytest.mark.parametrize(
    ("source", "column"),
    [
        ("has(intent.data.amount && true", 4),
        ('intent.data.tags[0 == "x"', 17),
        ('intent.data.note == "(" && (true', 28),
    ],
)
def test_an_unbalanced_bracket_is_reported_where_it_opens(source: str, column: int) -> None:
    """It used to be column 1 ("unexpected end of expression"), or the end of the input."""
    with pytest.raises(CelCompileError) as raised:
        static_check(source)
    assert (raised.value.kind, raised.value.column) == ("syntax", column)
    assert raised.value.message == f"Syntax error: {source[column - 1]!r} is never closed"


def test_compiled_programs_know_which_variables_they_read() -> None:
    cel = runtime("auto")
    assert cel.compile('count_sent(history, "*", "*", now) > 0').variables == {"history", "now"}
    assert cel.compile('intent.priority == "low"').variables == {"intent"}


@pytest.mark.parametrize("name", RUNTIMES)
def test_only_the_variables_an_expression_reads_need_binding(name: str) -> None:
    cel = runtime(name)
    only_intent = CelInput(now=NOW, intent=VARIABLES.intent)
    assert cel.compile("intent.data.amount > 100").evaluate(cel.activation(only_intent)) is True


def test_auto_prefers_the_fast_runtime() -> None:
    assert runtime("auto").name == RUNTIMES[0] == "cel-expr-python"


def test_an_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CEL runtime"):
        runtime("cel-fortran")
