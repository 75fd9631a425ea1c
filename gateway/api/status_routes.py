"""`GET /v1/status`: queues, provider breakers and the policy in force, as JSON.

The JSON twin of `/metrics` for people (the console's health page): the same Redis reads,
with ages and rates worked out. Any key may read it; it names no user and no address.
"""

from __future__ import annotations

from litestar import Router, get

from gateway.api.openapi import KEYED, errors
from gateway.policy.source import load_yaml
from gateway.services import Services
from gateway.status import GatewayStatus, gateway_status, provider_specs


def status_router(services: Services) -> Router:
    providers_file = services.settings.bundle_paths().providers
    specs = provider_specs(load_yaml(providers_file).data) if providers_file.exists() else {}

    @get(
        "/status",
        summary="Queue depth and oldest due job per tier, provider breakers, policy version",
        description="The JSON twin of `/metrics` for people: any key may read it; it names no user "
        "and no address. 503 when Redis cannot be reached.",
        responses=errors(KEYED),
    )
    async def status() -> GatewayStatus:
        return await gateway_status(
            services.redis, services.keys, services.current_policy(), specs, services.clock()
        )

    return Router(path="/v1", route_handlers=[status], tags=["operations"])
