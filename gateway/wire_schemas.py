"""JSON Schemas of the wire shapes, generated from the msgspec Structs in `gateway.model`.

The Structs are the source of truth; `schemas/*.schema.json` for them are generated so
producers and editors can validate payloads offline. `python -m gateway.wire_schemas`
rewrites them; a test fails when the committed files drift from the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from gateway.model import Decision, DryRunRequest, HistoryEntry, Intent, UserState

BASE = "https://notigate.dev/schemas/"
GENERATED: dict[str, tuple[type[msgspec.Struct], str]] = {
    "intent.schema.json": (Intent, "What a service sends: something happened for a user."),
    "user.schema.json": (UserState, "What the gateway knows about a recipient."),
    "history-entry.schema.json": (HistoryEntry, "Something recently delivered to a user."),
    "dry-run.schema.json": (DryRunRequest, "The body of POST /v1/dry-run."),
    "decision.schema.json": (
        Decision,
        "What the gateway decided and why: POST /v1/dry-run's answer, `notigate explain --json`.",
    ),
}


def generate(struct: type[msgspec.Struct], name: str, description: str) -> dict[str, Any]:
    schema = msgspec.json.schema(struct)
    for definition in schema.get("$defs", {}).values():
        if definition.get("type") == "object":
            definition["additionalProperties"] = False
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE + name,
        "title": struct.__name__,
        "description": description,
        **schema,
    }


def render(name: str) -> str:
    struct, description = GENERATED[name]
    return json.dumps(generate(struct, name, description), indent=2) + "\n"


def main(directory: str = "schemas") -> int:
    for name in GENERATED:
        (Path(directory) / name).write_text(render(name), encoding="utf-8")
        print(f"wrote {Path(directory) / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
