"""JSON Schema validation of policy, provider, template and test files, with locations.

The schemas in `schemas/` are the contract editors validate against as people type (each
YAML file names its schema in a `yaml-language-server` header). Here the same schemas
validate at load time, and each error is turned into a located, readable diagnostic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from gateway.policy.diagnostics import Diagnostic
from gateway.policy.source import PathKey, SourceDoc

SCHEMA_BASE = "https://notigate.dev/schemas/"
SCHEMA_FOR_KIND = {
    "Defaults": "policy.schema.json",
    "Policy": "policy.schema.json",
    "PolicyTestSuite": "policy-test.schema.json",
    "Providers": "providers.schema.json",
    "Template": "template.schema.json",
}


class SchemaSet:
    """The bundle's JSON Schemas, loaded once and cross-referenced by `$id`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        resources = []
        self.schemas: dict[str, dict[str, Any]] = {}
        for path in sorted(directory.glob("*.schema.json")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            self.schemas[path.name] = schema
            resources.append((schema.get("$id", SCHEMA_BASE + path.name), Resource.from_contents(schema)))
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, name: str) -> Draft202012Validator:
        if name not in self._validators:
            if name not in self.schemas:
                raise FileNotFoundError(f"schema {name} is missing from {self.directory}")
            self._validators[name] = Draft202012Validator(self.schemas[name], registry=self.registry)
        return self._validators[name]

    def validate(self, doc: SourceDoc, name: str) -> list[Diagnostic]:
        seen: set[tuple[PathKey, str]] = set()
        found = []
        for error in self.validator(name).iter_errors(doc.data):
            for leaf in _leaves(error):
                key = tuple(leaf.absolute_path)
                message, at_key, key = _describe(leaf, key)
                if (key, message) in seen:
                    continue
                seen.add((key, message))
                where = _display_key(key)
                text = f"{where}: {message}" if where else message
                found.append(doc.diagnostic(key, "schema", text, at_key=at_key))
        return found


@lru_cache(maxsize=8)
def schema_set(directory: Path) -> SchemaSet:
    return SchemaSet(directory)


def _leaves(error: ValidationError) -> Iterator[ValidationError]:
    """The error worth showing: for oneOf/anyOf, the deepest error of the closest branch.

    `best_match` ranks an error together with its context; handing it the bare context
    would rank the sub-errors as if they were top-level and pick the wrong branch.
    """
    yield best_match([error]) if error.context else error


def _describe(error: ValidationError, key: PathKey) -> tuple[str, bool, PathKey]:
    validator, instance = error.validator, error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    value: Any = error.validator_value
    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(k for k in instance if k not in schema.get("properties", {}))
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"unknown field {extra[0]!r}{hint}", True, (*key, extra[0])
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"missing required field {missing!r}", False, key
    if validator == "enum":
        options = ", ".join(repr(o) for o in value)
        return f"{instance!r} is not one of {options}", False, key
    if validator == "const":
        return f"must be {value!r}, not {instance!r}", False, key
    if validator == "pattern":
        what = schema.get("description") or f"the pattern {value}"
        return f"{instance!r} is not valid: {what}", False, key
    if validator == "type":
        expected = " or ".join(value) if isinstance(value, list) else str(value)
        return f"expected {_article(expected)}, got {_json_type(instance)}", False, key
    if validator == "dependentRequired":
        return error.message.replace("is a dependency of", "is required with"), False, key
    return error.message, False, key


def _article(type_name: str) -> str:
    names = {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "null": "null",
    }
    return names.get(type_name, type_name)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    if value is None:
        return "null"
    return f"the number {value!r}"


def _display_key(key: PathKey) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
