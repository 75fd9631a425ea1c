"""The real gateway app for `uvicorn --factory bench.gateway_server:app`.

Settings come from the environment exactly as `notigate serve` reads them; the bench sets
NOTIGATE_CEL_RUNTIME so the server runs the runtime the report names. With
NOTIGATE_BENCH_PROFILE=FILE the server also runs under cProfile from the moment the app is
built and dumps the profile to FILE when it shuts down, so `--profile` can show where a
dry-run request's time goes outside `decide()` too.
"""

from __future__ import annotations

import cProfile
import os
from pathlib import Path

from litestar import Litestar

from gateway.api.app import create_app
from gateway.settings import Settings

PROFILE_ENV = "NOTIGATE_BENCH_PROFILE"


def app() -> Litestar:
    application = create_app(Settings.from_env(), live=True)  # as `notigate serve` builds it
    target = os.environ.get(PROFILE_ENV)
    if target:
        _profile_until_shutdown(application, Path(target))
    return application


def _profile_until_shutdown(application: Litestar, target: Path) -> None:
    profiler = cProfile.Profile()

    def dump() -> None:
        profiler.disable()
        profiler.dump_stats(target)

    application.on_shutdown.append(dump)
    profiler.enable()
