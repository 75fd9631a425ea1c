"""The policy bundle for reading: `GET /v1/policy/bundle` and `GET /v1/policy/file?path=`.

The bundle view (`gateway.policy.describe`) is built once per policy version and kept; a
file is served only when it is one of the bundle's own files (policies, templates,
`providers.yaml`), found by the path the bundle's traces and diagnostics print, so no
request can name anything else on disk. Policy files hold names of environment variables,
never their values, so any key may read them, as it may read the trace that cites them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import msgspec
from litestar import MediaType, Response, Router, get
from litestar.openapi import ResponseSpec
from litestar.params import QueryParameter

from gateway.api.openapi import KEYED, PARAMS, errors
from gateway.errors import NotFound
from gateway.policy.compiled import CompiledPolicy
from gateway.policy.compiler import BundlePaths
from gateway.policy.describe import BundleView, describe
from gateway.policy.diagnostics import display_path

MAX_FILE_BYTES = 1_048_576


class BundleFile(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    text: str


def bundle_router(policy: Callable[[], CompiledPolicy], paths: Callable[[], BundlePaths]) -> Router:
    cached: dict[str, bytes] = {}  # policy version -> encoded view; a reload adds one

    @get(
        "/policy/bundle",
        summary="The bundle in force: rules in precedence order, tiers, caps, schedules, with file and line",
        description="What the console's policy page shows: every rule in the order the engine "
        "tries them, with the file and line each comes from.",
        responses={
            200: ResponseSpec(data_container=BundleView, description="The bundle, as people read it"),
            **errors(KEYED),
        },
    )
    async def bundle() -> Response[bytes]:
        current = policy()
        body = cached.get(current.version)
        if body is None:
            body = msgspec.json.encode(describe(current))
            cached.clear()
            cached[current.version] = body
        return Response(content=body, media_type=MediaType.JSON)

    @get(
        "/policy/file",
        summary="The text of one of the bundle's files, by the path traces cite",
        description="Only the bundle's own files (policies, templates, providers.yaml) are "
        "served; any other path is a 404.",
        responses=errors(KEYED, PARAMS, 404),
    )
    async def bundle_file(
        path: Annotated[
            str,
            QueryParameter(
                min_length=1,
                max_length=1024,
                description="A file as traces cite it (`policies/social.yaml`)",
            ),
        ],
    ) -> BundleFile:
        text = await asyncio.to_thread(_read, paths(), path)  # off the event loop: it walks directories
        if text is None:
            raise NotFound(f"{path!r} is not a file of the policy bundle", field="path")
        return BundleFile(path=path, text=text)

    return Router(path="/v1", route_handlers=[bundle, bundle_file], tags=["policy"])


def _read(paths: BundlePaths, wanted: str) -> str | None:
    """The text of the bundle file the compiler shows as `wanted` (`display_path`), if any."""
    found = next((p for p in paths.all_files() if display_path(p) == wanted), None)
    if found is None or found.stat().st_size > MAX_FILE_BYTES:
        return None
    return found.read_text(encoding="utf-8", errors="replace")
