"""What a long-running process built at startup, kept out of the garbage collector's way.

Everything imported and built before a process serves (modules, the compiled policy and
templates, SQLAlchemy's tables, the provider clients) lives as long as the process. A full
collection scans every tracked object, so each one paid for the ~100,000 startup left, none
of which can ever be garbage; under load a gateway process ran one every second or two,
stopping its event loop for tens of milliseconds each time. Frozen, they are never scanned.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect startup's garbage, then freeze what is left (`gc.freeze`): called once a
    process is ready to serve, never per request."""
    gc.collect()
    gc.freeze()
