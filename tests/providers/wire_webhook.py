"""The signed webhook on the wire: a JSON POST, HMAC-signed, answered with plain HTTP."""

from __future__ import annotations

import hashlib
import hmac

from gateway.providers.base import Adapter, AdapterDeps, Address, Message
from gateway.providers.spec import ProviderSpec
from gateway.providers.webhook import WebhookAdapter
from tests.providers.conformance import (
    INVALID_ADDRESS,
    MALFORMED_ANSWER,
    RATE_LIMITED,
    RETRY_AFTER,
    SERVER_ERROR,
    SUCCESS,
    by_scenario,
)
from tests.stub_http import Reply, Request

SECRET = "whsec-conformance-7f3a9c"


class WebhookWire:
    adapter = "webhook"
    channel = "webhook"
    secrets = (SECRET,)

    base = "http://127.0.0.1:9"

    def build(self, base_url: str, timeout: float) -> Adapter:
        """Posting to each user's own URL (no fixed `url`), as the shipped `webhook` provider does."""
        self.base = base_url
        spec = ProviderSpec.parse(
            "hook",
            {
                "channel": "webhook",
                "adapter": "webhook",
                "cost": 0,
                "timeout": f"{int(timeout * 1000)}ms",
                "credentials": {"signing_secret": "HOOK_SECRET"},
                # The stand-in listens on loopback, which user URLs may not reach unless allowed.
                "settings": {"allowed_networks": "127.0.0.0/8"},
            },
            {"HOOK_SECRET": SECRET},
        )
        return WebhookAdapter.from_spec(spec, AdapterDeps())

    def address(self, valid: bool = True) -> Address:
        # A user's URL may carry a secret in its path: the harness checks it is never logged.
        path = "/hooks/u42-tok-7Hq2vX" if valid else "/hooks/retired-tok-0Lp9"
        return Address("webhook", self.base + path)

    def is_send(self, request: Request) -> bool:
        return request.path.startswith("/hooks/")

    reply = staticmethod(
        by_scenario(
            {
                SUCCESS: lambda r: Reply(200, {"ok": True}, headers={"x-request-id": "req_1"}),
                INVALID_ADDRESS: lambda r: Reply(410, "gone"),
                RATE_LIMITED: lambda r: Reply(429, "slow down", headers={"retry-after": str(RETRY_AFTER)}),
                SERVER_ERROR: lambda r: Reply(503, "unavailable"),
                MALFORMED_ANSWER: lambda r: Reply(raw=b"HTTP/1.1 OK-ish\r\n\r\nnot http"),
            }
        )
    )

    def check_request(self, request: Request, message: Message, address: Address, key: str) -> None:
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["idempotency-key"] == key
        stamp, _, signature = request.headers["notigate-signature"].partition(",v1=")
        t = stamp.removeprefix("t=")
        mac = hmac.new(SECRET.encode(), f"{t}.".encode() + request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(mac, signature), "the signature does not verify"
        body = request.json()
        assert body["id"] == message.delivery_id
        assert body["message"] == message.fields

    def invalid_address_code(self) -> str:
        return "gone"


WIRE = WebhookWire()
