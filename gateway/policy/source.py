"""YAML documents that remember where each value came from.

PyYAML's composer keeps a mark (line, column) on every node; plain `yaml.safe_load`
throws them away. We compose, then build plain Python values alongside a table from each
value's path (`("rules", 2, "when")`) to its location, so schema errors, CEL errors and
reference errors can all point at the exact line and column.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.policy.diagnostics import Diagnostic, DiagnosticCode, display_path

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """Safe loading with YAML 1.2 core-schema scalars.

    YAML 1.1 (PyYAML's default) reads `22:00` as the integer 1320, `no` as False and
    `2026-11-21T09:00:00Z` as a naive datetime: each a silent corruption of a quiet-hours
    window, a country code or a pinned clock. Only true/false, null, and plain decimal,
    hex, octal and float numbers are resolved; everything else stays a string.
    """

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)

PathKey = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Location:
    line: int  # 1-based
    col: int  # 1-based
    style: str | None = None  # scalar style: None (plain), "'", '"', "|", ">"


@dataclass(slots=True)
class SourceDoc:
    """One YAML document with the location of every value and mapping key in it."""

    path: Path
    data: Any
    locations: dict[PathKey, Location] = field(default_factory=dict)
    key_locations: dict[PathKey, Location] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return display_path(self.path)

    def loc(self, key: PathKey) -> Location:
        """The location of the value at `key`, or of its nearest located ancestor."""
        while key not in self.locations and key:
            key = key[:-1]
        return self.locations.get(key, Location(1, 1))

    def key_loc(self, key: PathKey) -> Location:
        """The location of a mapping key (where an unexpected property is written)."""
        return self.key_locations.get(key) or self.loc(key)

    def diagnostic(
        self, key: PathKey, code: DiagnosticCode, message: str, *, at_key: bool = False
    ) -> Diagnostic:
        where = self.key_loc(key) if at_key else self.loc(key)
        return Diagnostic(file=self.name, line=where.line, col=where.col, code=code, message=message)


class SourceError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.format())
        self.diagnostic = diagnostic


def load_yaml(path: Path) -> SourceDoc:
    """Load one single-document YAML file; raise SourceError with a located diagnostic."""
    name = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(Diagnostic(file=name, line=1, col=1, code="unreadable", message=str(exc))) from exc
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> SourceDoc:
    name = display_path(path)
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise SourceError(
            Diagnostic(file=name, line=line, col=col, code="yaml-syntax", message=problem)
        ) from exc
    except yaml.YAMLError as exc:
        raise SourceError(Diagnostic(file=name, line=1, col=1, code="yaml-syntax", message=str(exc))) from exc
    if len(nodes) != 1 or nodes[0] is None:
        raise SourceError(
            Diagnostic(
                file=name,
                line=1,
                col=1,
                code="yaml-document",
                message=f"expected exactly one YAML document, found {len(nodes)}",
            )
        )
    doc = SourceDoc(path=path, data=None)
    doc.data = _Builder(doc).build(nodes[0], ())
    return doc


class _Builder:
    """Turns composed nodes into plain values, recording each one's location."""

    def __init__(self, doc: SourceDoc) -> None:
        self.doc = doc
        self.constructor = _Loader("")

    def scalar(self, node: yaml.Node) -> Any:
        return self.constructor.construct_object(node, deep=True)

    def build(self, node: yaml.Node, key: PathKey) -> Any:
        return _build(node, key, self.doc, self)


def _build(node: yaml.Node, key: PathKey, doc: SourceDoc, builder: _Builder) -> Any:
    doc.locations[key] = Location(
        node.start_mark.line + 1, node.start_mark.column + 1, getattr(node, "style", None)
    )
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SourceError(
                    doc_diag(
                        doc,
                        key_node,
                        "yaml-merge",
                        "YAML merge keys (<<) are not supported; repeat the values",
                    )
                )
            name = builder.scalar(key_node)
            if not isinstance(name, str | int | bool):
                raise SourceError(doc_diag(doc, key_node, "yaml-key", "mapping keys must be plain scalars"))
            if name in result:
                raise SourceError(
                    doc_diag(
                        doc,
                        key_node,
                        "yaml-duplicate-key",
                        f"duplicate key {name!r} (the earlier value would be lost)",
                    )
                )
            child = (*key, name if isinstance(name, str) else str(name))
            doc.key_locations[child] = Location(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[child[-1]] = _build(value_node, child, doc, builder)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*key, i), doc, builder) for i, item in enumerate(node.value)]
    return builder.scalar(node)


def doc_diag(doc: SourceDoc, node: yaml.Node, code: DiagnosticCode, message: str) -> Diagnostic:
    return Diagnostic(
        file=doc.name,
        line=node.start_mark.line + 1,
        col=node.start_mark.column + 1,
        code=code,
        message=message,
    )


def walk_strings(value: Any, key: PathKey = ()) -> Iterator[tuple[PathKey, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk_strings(v, (*key, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_strings(v, (*key, i))
    elif isinstance(value, str):
        yield key, value
