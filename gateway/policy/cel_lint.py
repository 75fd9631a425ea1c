"""What a CEL checker cannot see but a policy author gets wrong: checked at compile time.

CEL's type checker knows a helper's signature, not that `"25:00"` is no clock time, that
`"Mars/Olympus"` is no zone, or that `user.timezon` reads a field no user has (the map is
`dyn`, so it fails only at evaluation, for every intent). Walking the parsed expression
(cel-python's lark tree, the same one the reference walk uses) finds these, and a helper
called with the wrong number of arguments, each at its column.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping

import msgspec
from lark import Token, Tree

from gateway.model import Contacts, EventPattern, UserState, check_zone
from gateway.policy.cel_errors import CelCompileError
from gateway.policy.cel_functions import HELPERS
from gateway.timeutil import parse_clock


def _zone(text: str) -> None:
    try:
        check_zone(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IANA time zone; use a name such as 'Europe/Paris'") from None


def _pattern(text: str) -> None:
    try:
        msgspec.convert(text, EventPattern)
    except msgspec.ValidationError:
        raise ValueError(f"{text!r} is not an event pattern; write order.shipped, order.* or *") from None


def _clock(text: str) -> None:
    parse_clock(text)


# (helper, argument index) -> the check its literal must pass
LITERAL_CHECKS: Mapping[tuple[str, int], Callable[[str], None]] = {
    ("local_time", 1): _zone,
    ("local_weekday", 1): _zone,
    ("in_window", 1): _zone,
    ("in_window", 2): _clock,
    ("in_window", 3): _clock,
    ("event_matches", 1): _pattern,
    ("count_sent", 1): _pattern,
}
_ARITY = {helper.name: helper for helper in HELPERS}
# The fields of `user` as conditions see it: those of the user schema (schemas/user.schema.json).
USER_FIELDS: Mapping[tuple[str, ...], frozenset[str]] = {
    ("user",): frozenset(f.name for f in msgspec.structs.fields(UserState)),
    ("user", "contacts"): frozenset(f.name for f in msgspec.structs.fields(Contacts)),
}


def lint(tree: Tree[Token]) -> None:
    """Raise CelCompileError for the first problem in reading order."""
    found: list[CelCompileError] = []
    for node in tree.iter_subtrees():
        check = {"ident_arg": _check_call, "member_dot": _check_field}.get(str(node.data))
        try:
            if check is not None:
                check(node)
        except CelCompileError as exc:
            found.append(exc)
    if found:
        raise min(found, key=lambda e: (e.line, e.column))


def _check_call(node: Tree[Token]) -> None:
    name = node.children[0]
    helper = _ARITY.get(str(name))
    if helper is None or not isinstance(name, Token):
        return
    args = node.children[1].children if len(node.children) > 1 and isinstance(node.children[1], Tree) else []
    if len(args) != len(helper.params):
        raise CelCompileError(
            f"{helper.name} takes {len(helper.params)} argument{'s' if len(helper.params) != 1 else ''} "
            f"({', '.join(helper.params)}), got {len(args)}: {helper.signature}",
            name.line or 1,
            name.column or 1,
        )
    for index, arg in enumerate(args):
        literal = _string_literal(arg)
        judge = LITERAL_CHECKS.get((helper.name, index))
        if literal is None or judge is None:
            continue
        token, value = literal
        try:
            judge(value)
        except ValueError as exc:
            raise CelCompileError(
                f"{helper.name}, argument {index + 1}: {exc}", token.line or 1, token.column or 1
            ) from None


def _string_literal(node: object) -> tuple[Token, str] | None:
    """The token and value of an argument that is just a string literal."""
    while isinstance(node, Tree) and len(node.children) == 1 and node.data != "literal":
        node = node.children[0]
    if not (isinstance(node, Tree) and node.data == "literal" and isinstance(node.children[0], Token)):
        return None
    token = node.children[0]
    try:
        value = ast.literal_eval(str(token))
    except (ValueError, SyntaxError):
        return None
    return (token, value) if isinstance(value, str) else None


def _check_field(node: Tree[Token]) -> None:
    member, field = node.children[0], node.children[1]
    path = tuple(_path(member))
    known = USER_FIELDS.get(path)
    if known is None or not isinstance(field, Token) or str(field) in known:
        return
    raise CelCompileError(
        f"{'.'.join(path)} has no field {str(field)!r}; the user schema gives it {', '.join(sorted(known))}",
        field.line or 1,
        field.column or 1,
    )


def _path(node: object) -> Iterator[str]:
    """`user.contacts` as ("user", "contacts"); anything else yields a path no check knows."""
    while isinstance(node, Tree) and len(node.children) == 1 and node.data not in ("ident",):
        node = node.children[0]
    if isinstance(node, Tree) and node.data == "ident":
        yield str(node.children[0])
    elif isinstance(node, Tree) and node.data == "member_dot":
        yield from _path(node.children[0])
        yield str(node.children[1])
    else:
        yield "?"
