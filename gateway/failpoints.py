"""Failpoints: named places where a test can make a real process die, as `kill -9` would.

Crash safety is only proven by crashing. `NOTIGATE_FAILPOINTS=delivery.sent=exit` makes a
worker process exit abruptly (no cleanup, no finally blocks, exit status 137) the first
time it reaches `delivery.sent`: after a provider accepted a message, before the outcome
is stored. The fault tests kill workers at each point of the delivery path this way.
Unset (always, outside tests) a failpoint costs one dictionary lookup.

Actions: `exit` (die at once), `sleep:SECONDS` (stall, to let a test kill or race us).
"""

from __future__ import annotations

import os
import time

_ACTIONS: dict[str, str] = {}
_LOADED = False


def _load() -> None:
    global _LOADED
    for item in filter(None, os.environ.get("NOTIGATE_FAILPOINTS", "").split(",")):
        name, _, action = item.partition("=")
        _ACTIONS[name.strip()] = action.strip()
    _LOADED = True


def failpoint(name: str) -> None:
    if not _LOADED:
        _load()
    action = _ACTIONS.get(name)
    if action is None:
        return
    if action == "exit":
        os._exit(137)
    if action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
