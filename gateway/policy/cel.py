"""The one seam between policies and a CEL implementation.

Two runtimes sit behind it and must decide alike (the policy suites and property tests
run under both):

* `cel-expr-python` (Google's C++ CEL, ~2-7 us per evaluation) is the default when it
  is installed. It reports evaluation failures as error *values*, not exceptions, and only
  accepts protobuf timestamps nested inside maps, so the adapter converts and checks.
* `cel-python` (pure Python) is the reference fallback. We use its InterpretedRunner
  only: in 0.5 the CompiledRunner cannot call custom functions (cel-python#145) and
  mis-evaluates `has(x) && ...` guards, and creating an interpreted environment before a
  compiled one breaks the latter through the process-wide parser singleton. Interpreted
  evaluation costs 150-800 us, which is why the fast runtime exists.

Everything else in the gateway talks to `CelRuntime`, `CelProgram` and the two errors.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol, cast

from gateway.policy.cel_errors import CelCompileError as CelCompileError
from gateway.policy.cel_errors import CelErrorKind
from gateway.policy.cel_errors import CelEvalError as CelEvalError
from gateway.policy.cel_functions import HELPERS, Helper, HelperError
from gateway.policy.cel_lint import lint

VARIABLES = ("intent", "user", "now", "history")
RUNTIME_NAMES = ("cel-expr-python", "cel-python")
__all__ = [
    "CelCompileError",
    "CelEvalError",
    "CelInput",
    "CelProgram",
    "CelRuntime",
    "runtime",
    "static_check",
]


@dataclass(frozen=True, slots=True)
class CelInput:
    """The variables a condition sees, as plain Python values.

    Maps hold JSON-like values (they come from decoded JSON), except that a map's own
    top-level values may be aware datetimes (`intent.send_at`, each history entry's `at`);
    runtimes convert only those. A variable no compiled expression reads may be None: it
    is then not built at all.
    """

    now: dt.datetime
    intent: Mapping[str, Any] | None = None
    user: Mapping[str, Any] | None = None
    history: list[Mapping[str, Any]] | None = None


class CelProgram(Protocol):
    source: str
    variables: frozenset[str]

    def evaluate(self, activation: Any) -> Any:
        """Return the result as a plain Python value; raise CelEvalError on failure."""


class CelRuntime(Protocol):
    name: str

    def compile(self, source: str) -> CelProgram:
        """Parse and check `source`; raise CelCompileError."""

    def activation(self, variables: CelInput) -> Any:
        """Convert the variables once per decision into what this runtime evaluates against."""


_IDENTIFIER = re.compile(r"\b(intent|user|now|history)\b")


def _variables(source: str) -> frozenset[str]:
    """The variables an expression may read (a superset: a name inside a string counts too)."""
    return frozenset(_IDENTIFIER.findall(source))


# --- cel-expr-python ------------------------------------------------------------------

_EXPR_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")


class CelExprProgram:
    __slots__ = ("_error_type", "_expr", "source", "variables")

    def __init__(self, source: str, expr: Any, error_type: Any) -> None:
        self.source = source
        self.variables = _variables(source)
        self._expr = expr
        self._error_type = error_type

    def evaluate(self, activation: Any) -> Any:
        result = self._expr.eval(activation)
        if result.type() == self._error_type:
            raise CelEvalError(_strip_status(str(result.value())))
        return result.plain_value()


def _strip_status(message: str) -> str:
    """`NOT_FOUND: Key not found in map : "x"` -> `Key not found in map : "x"`."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.isupper() else message


class CelExprRuntime:
    name = "cel-expr-python"

    def __init__(self) -> None:
        from cel_expr_python import cel
        from google.protobuf import timestamp_pb2

        self._cel = cel
        self._timestamp = timestamp_pb2.Timestamp
        t = cel.Type
        types = {
            "timestamp": t.TIMESTAMP,
            "string": t.STRING,
            "int": t.INT,
            "bool": t.BOOL,
            "list": t.List(t.DYN),
        }
        functions = [
            cel.FunctionDecl(
                h.name,
                [
                    cel.Overload(
                        f"notigate_{h.name}",
                        types[h.returns],
                        [types[p] for p in h.params],
                        impl=_raise_as_value_error(h),
                    )
                ],
            )
            for h in HELPERS
        ]
        self._env = cel.NewEnv(
            variables={
                "intent": t.Map(t.STRING, t.DYN),
                "user": t.Map(t.STRING, t.DYN),
                "now": t.TIMESTAMP,
                "history": t.List(t.DYN),
            },
            functions=functions,
        )
        self._error_type = t.ERROR

    def compile(self, source: str) -> CelExprProgram:
        try:
            expr = self._env.compile(source)
        except RuntimeError as exc:
            match = _EXPR_ERROR.search(str(exc))
            # This runtime reports only text; its kind is read here, at the seam, once.
            message = match.group(3) if match else _strip_status(str(exc))
            kind: CelErrorKind = "syntax" if message.startswith("Syntax error") else "check"
            if match:
                raise CelCompileError(message, int(match.group(1)), int(match.group(2)), kind) from exc
            raise CelCompileError(message, kind=kind) from exc
        return CelExprProgram(source, expr, self._error_type)

    def activation(self, variables: CelInput) -> Any:
        data: dict[str, Any] = {"now": variables.now}
        if variables.intent is not None:
            data["intent"] = self._top_level(variables.intent)
        if variables.user is not None:
            data["user"] = self._top_level(variables.user)
        if variables.history is not None:
            data["history"] = [self._top_level(h) for h in variables.history]
        return self._env.Activation(data)

    def _top_level(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Nested timestamps must be protobuf messages here; only top-level ones can occur."""
        converted = dict(values)
        for key, value in values.items():
            if isinstance(value, dt.datetime):
                stamp = self._timestamp()
                stamp.FromDatetime(value)
                converted[key] = stamp
        return converted


def _raise_as_value_error(helper: Helper) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        try:
            return helper.impl(*args)
        except HelperError as exc:
            raise ValueError(f"{helper.name}: {exc}") from None

    call.__name__ = helper.name
    return call


# --- cel-python -----------------------------------------------------------------------

_COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_MACROS = frozenset({"has", "dyn"})


class CelPythonProgram:
    __slots__ = ("_runner", "source", "variables")

    def __init__(self, source: str, runner: Any) -> None:
        self.source = source
        self.variables = _variables(source)
        self._runner = runner

    def evaluate(self, activation: Any) -> Any:
        from celpy.evaluation import CELEvalError

        try:
            result = self._runner.evaluate(activation)
        except CELEvalError as exc:
            raise CelEvalError(_celpy_message(exc)) from None
        if isinstance(result, CELEvalError):
            raise CelEvalError(_celpy_message(result))
        return _celpy_plain(result)


def _celpy_message(exc: BaseException) -> str:
    """cel-python nests (message, type, args) tuples; the innermost message is the useful one."""
    args = exc.args
    while len(args) >= 3 and isinstance(args[2], tuple) and args[2]:
        inner = args[2]
        if isinstance(inner[0], str) and len(inner) >= 3 and isinstance(inner[2], tuple):
            args = inner
            continue
        if isinstance(inner[0], str) and args[0] in ("evaluation error", "return error for overflow"):
            return inner[0]
        break
    return str(args[0]) if args else str(exc)


def _celpy_plain(value: Any) -> Any:
    from celpy import celtypes

    if isinstance(value, celtypes.BoolType | bool):
        return bool(value)
    if isinstance(value, celtypes.TimestampType):
        return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)
    if isinstance(value, celtypes.DurationType):
        return dt.timedelta(seconds=value.total_seconds())
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, Mapping):
        return {_celpy_plain(k): _celpy_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_celpy_plain(v) for v in value]
    return value


def _celpy_helper(helper: Helper) -> Callable[..., Any]:
    from celpy import celtypes
    from celpy.evaluation import CELEvalError

    wrap: Callable[[Any], Any] = {
        "bool": celtypes.BoolType,
        "int": celtypes.IntType,
        "string": celtypes.StringType,
    }[helper.returns]

    def call(*args: Any) -> Any:
        if len(args) != len(helper.params):
            return CELEvalError(f"{helper.signature} takes {len(helper.params)} arguments", TypeError, ())
        for arg in args:
            if isinstance(arg, CELEvalError):
                return arg
        try:
            return wrap(helper.impl(*(_celpy_plain(a) for a in args)))
        except HelperError as exc:
            return CELEvalError(f"{helper.name}: {exc}", ValueError, ())

    call.__name__ = helper.name
    return call


def _lark_problem(exc: BaseException | None) -> str:
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken

    if isinstance(exc, UnexpectedToken):
        if exc.token.type == "$END":
            return "unexpected end of expression"
        return f"unexpected {exc.token.value!r}"
    if isinstance(exc, UnexpectedCharacters):
        return f"unexpected character {exc.char!r}"
    return "cannot parse the expression"


def _at_end(exc: BaseException | None) -> bool:
    from lark.exceptions import UnexpectedEOF, UnexpectedToken

    return isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END")


_CLOSING = {"(": ")", "[": "]", "{": "}"}
_STRING = re.compile(
    r"[rR]?("
    + r'"""[\s\S]*?"""'
    + "|"
    + r"'''[\s\S]*?'''"
    + r'|"(?:\\.|[^"\\\n])*"'
    + r"|'(?:\\.|[^'\\\n])*')"
)


def _unclosed_bracket(source: str) -> tuple[int, int, str] | None:
    """(line, column, bracket) of the innermost bracket still open at the end, outside strings.

    Lark reports an unbalanced parenthesis at the end of the input, or at column 1 for some
    inputs; the author needs to see where the bracket was opened.
    """
    masked = _STRING.sub(lambda m: " " * len(m.group(0)), source)
    stack: list[int] = []
    for offset, char in enumerate(masked):
        if char in _CLOSING:
            stack.append(offset)
        elif char in _CLOSING.values() and stack and _CLOSING[masked[stack[-1]]] == char:
            stack.pop()
    if not stack:
        return None
    offset = stack[-1]
    line = source.count("\n", 0, offset) + 1
    column = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, column, source[offset]


class CelPythonRuntime:
    name = "cel-python"

    @staticmethod
    def shared() -> CelPythonRuntime:
        """The process's instance (cel-python is a dependency, always installed)."""
        return cast(CelPythonRuntime, runtime("cel-python"))

    def __init__(self) -> None:
        import celpy
        from celpy.evaluation import base_functions

        logging.getLogger("celpy").setLevel(logging.CRITICAL)
        self._celpy = celpy
        self._env = celpy.Environment()
        self._functions = {h.name: _celpy_helper(h) for h in HELPERS}
        self._known_functions = (
            {name for name in base_functions if name.isidentifier()} | set(self._functions) | _MACROS
        )

    def compile(self, source: str) -> CelPythonProgram:
        from celpy.celparser import CELParseError

        try:
            tree = self._env.compile(source)
        except CELParseError as exc:
            unclosed = _unclosed_bracket(source) if _at_end(exc.__context__) else None
            if unclosed is not None:
                line, column, bracket = unclosed
                raise CelCompileError(
                    f"Syntax error: {bracket!r} is never closed", line, column, kind="syntax"
                ) from None
            line = getattr(exc, "line", None) or 1
            column = getattr(exc, "column", None) or 1
            raise CelCompileError(
                f"Syntax error: {_lark_problem(exc.__context__)}", line, column, kind="syntax"
            ) from None
        self._check_references(tree)
        runner = self._celpy.InterpretedRunner(self._env, tree, self._functions)
        return CelPythonProgram(source, runner)

    def parse(self, source: str) -> Any:
        """The lark tree of an expression `compile` accepted (for `cel_lint`)."""
        return self._env.compile(source)

    def _check_references(self, tree: Any) -> None:
        """cel-python resolves names only at evaluation; find undeclared ones now."""
        from lark import Token, Tree

        def ident_of(node: Any) -> Token | None:
            while isinstance(node, Tree) and node.data != "ident" and len(node.children) == 1:
                node = node.children[0]
            if isinstance(node, Tree) and node.data == "ident":
                token = node.children[0]
                return token if isinstance(token, Token) else None
            return None

        def walk(node: Any, bound: frozenset[str]) -> None:
            if not isinstance(node, Tree):
                return
            if node.data == "ident":
                token = cast(Token, node.children[0])
                if token not in VARIABLES and token not in bound:
                    raise CelCompileError(
                        f"undeclared reference to '{token}'", token.line or 1, token.column or 1
                    )
                return
            if node.data == "ident_arg":
                token = cast(Token, node.children[0])
                if token not in self._known_functions:
                    raise CelCompileError(
                        f"undeclared reference to '{token}'", token.line or 1, token.column or 1
                    )
            if node.data == "member_dot_arg" and str(node.children[1]) in _COMPREHENSIONS:
                target, _, *rest = node.children
                walk(target, bound)
                args = rest[0].children if rest and isinstance(rest[0], Tree) else []
                var = ident_of(args[0]) if args else None
                inner = bound | {str(var)} if var is not None else bound
                for arg in args[1:]:
                    walk(arg, inner)
                return
            for child in node.children:
                walk(child, bound)

        walk(tree, frozenset())

    def activation(self, variables: CelInput) -> Any:
        from celpy.adapter import json_to_cel
        from celpy.celtypes import TimestampType

        data: dict[str, Any] = {"now": TimestampType(variables.now)}
        if variables.intent is not None:
            data["intent"] = json_to_cel(dict(variables.intent))
        if variables.user is not None:
            data["user"] = json_to_cel(dict(variables.user))
        if variables.history is not None:
            data["history"] = json_to_cel([dict(h) for h in variables.history])
        return data


# --- selection ------------------------------------------------------------------------


def static_check(source: str) -> None:
    """Check an expression the same way whichever runtime will evaluate it.

    Every installed runtime compiles it, cel-python first: its positions for syntax and
    undeclared-name errors come from our own reference walk, so a diagnostic's column does
    not depend on the runtime, and a bundle one runtime rejects is rejected by both. Then
    `cel_lint` judges helper calls and `user.` fields on cel-python's tree.
    """
    reference = CelPythonRuntime.shared()
    reference.compile(source)
    # Before cel-expr-python, whose checker would call a helper with the wrong number of
    # arguments an "undeclared reference".
    lint(reference.parse(source))
    try:
        fast = runtime("cel-expr-python")
    except ImportError:
        pass
    else:
        fast.compile(source)
    for literal in _DURATION_LITERAL.finditer(source):
        if not _CEL_DURATION.match(literal.group(2)):
            raise CelCompileError(
                f"duration({literal.group(1)}{literal.group(2)}{literal.group(1)}) is not a CEL duration: "
                "CEL durations take h, m, s, ms, us and ns (write 168h for 7 days)",
                1,
                literal.start() + 1,
            )


# cel-python accepts `duration("7d")`; the CEL specification (and cel-expr-python) do not.
_DURATION_LITERAL = re.compile(r"""duration\(\s*(["'])(.*?)\1\s*\)""")
_CEL_DURATION = re.compile(r"^-?(\d+(\.\d+)?(h|m|s|ms|us|ns))+\Z")


def available_runtimes() -> list[str]:
    names = []
    for name in RUNTIME_NAMES:
        try:
            runtime(name)
        except ImportError:
            continue
        names.append(name)
    return names


@cache
def runtime(name: str = "auto") -> CelRuntime:
    """The named runtime; `auto` prefers cel-expr-python and falls back to cel-python.

    One instance per name per process: environments are costly and cel-python's parser
    is process-wide anyway.
    """
    if name == "auto":
        try:
            return runtime("cel-expr-python")
        except ImportError:
            return runtime("cel-python")
    if name == "cel-expr-python":
        return CelExprRuntime()
    if name == "cel-python":
        return CelPythonRuntime()
    raise ValueError(f"unknown CEL runtime {name!r}; choose auto, {', '.join(RUNTIME_NAMES)}")
