"""The headless Chromium the console tests drive: Debian's package, through Playwright.

Only Playwright's Python driver comes from PyPI; the browser is the system's (`/usr/bin/chromium`
from Debian's `chromium` package, or NOTIGATE_CHROMIUM), never a browser download. `./dev test`
installs the package when it is missing and it can (root with apt-get).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# This machine's network is closed: without these flags Chromium waits on connections to
# Google's services (sync, component updates, QUIC probes) and a page can hang.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "the console's browser tests need Chromium: `sudo apt-get install -y chromium` (Debian/Ubuntu; "
    "`./dev test` does it by itself when run as root), or set NOTIGATE_CHROMIUM to a Chromium or "
    "Chrome binary"
)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("NOTIGATE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
