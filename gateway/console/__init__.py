"""The console: a web page served by the API process (`/console`), for the people who write
policies and answer "why?". Plain ES modules and CSS under `static/`, no build step; every
figure on it comes from the public API with the signed-in key. See docs/console.md.
"""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
