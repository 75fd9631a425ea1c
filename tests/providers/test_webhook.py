"""The webhook adapter's address rules: a user's URL into our own network is never called."""

from __future__ import annotations

from gateway.providers.base import AdapterDeps, Address, Delivered, Permanent
from gateway.providers.spec import ProviderSpec
from gateway.providers.webhook import WebhookAdapter
from tests.providers.conformance import message
from tests.stub_http import Reply, stub_server


def adapter(**settings: str) -> WebhookAdapter:
    raw = {
        "channel": "webhook",
        "adapter": "webhook",
        "cost": 0,
        "timeout": "2s",
        "credentials": {"signing_secret": "S"},
        "settings": settings,
    }
    return WebhookAdapter.from_spec(ProviderSpec.parse("hook", raw, {"S": "whsec-1"}), AdapterDeps())


async def test_a_user_url_on_loopback_is_refused_unless_the_operator_allows_it() -> None:
    msg = message("webhook")
    async with stub_server(lambda r: Reply(200, {"ok": True})) as server:
        url = server.url.replace("127.0.0.1", "localhost") + "/hooks/u1"
        strict, lenient = adapter(), adapter(allowed_networks="127.0.0.0/8, ::1")
        try:
            refused = await strict.send(msg, Address("webhook", url), idempotency_key="k")
            crlf = await strict.send(msg, Address("webhook", url + "\r\nHost: x"), idempotency_key="k")
            taken = await lenient.send(msg, Address("webhook", url), idempotency_key="k")
        finally:
            await strict.close()
            await lenient.close()
    assert isinstance(refused, Permanent) and refused.code == "unsafe_url" and refused.address_invalid
    assert "loopback" in refused.error
    assert isinstance(crlf, Permanent) and crlf.code == "unsafe_url"
    assert isinstance(taken, Delivered)
    assert len(server.requests) == 1  # only the allowed send reached the server


async def test_a_fixed_endpoint_is_the_operator_s_own_and_not_checked() -> None:
    async with stub_server(lambda r: Reply(200, {"ok": True})) as server:
        fixed = adapter(url=server.url + "/ingest")
        try:
            result = await fixed.send(message("webhook"), Address("user", "u1"), idempotency_key="k")
        finally:
            await fixed.close()
    assert isinstance(result, Delivered)
